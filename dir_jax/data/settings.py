"""Default settings of the input pipeline and its augmentations (ml_collections only, no TensorFlow).

Training configs embed `pipeline_config()` as `config.data`; `dir_jax.data.input_pipeline` and
`dir_jax.data.augment` read these fields.
"""

import ml_collections


def augment_config() -> ml_collections.ConfigDict:
  """Every augmentation switch and range; defaults are the reference's.

  Read by `dir_jax.data.augment` (its module docstring gives the order and the geometry).
  """
  config = ml_collections.ConfigDict()
  config.flip = True
  config.flip_prob = 0.5
  config.rotate = True
  config.rotation_max_deg = 180.0  # theta ~ U(-max, max)
  config.zoom = True
  config.zoom_max_delta = 0.1  # s ~ U(1 - delta, 1 + delta)
  config.translate = True
  config.translation_max_px = 10.0  # t_x, t_y ~ U(-max, max) independently
  config.motion_blur = True
  config.motion_blur_prob = 0.3
  config.motion_blur_min_size_px = 3  # line length ~ uniform integer in [min, max] (np.random.randint(3, 10))
  config.motion_blur_max_size_px = 9
  # The reference passes radians where cv2 wants degrees (docs/quirks.md#q25), so its blur is within +-3.1 deg of
  # horizontal; the uniform rotation that follows makes either choice uniform in the final image.
  config.motion_blur_max_angle_deg = 180.0
  # Nearest keeps every dense value a real surface coordinate and keeps dense and seg aligned; bilinear
  # (the reference's cv2 default) mixes coordinates with the 0 background along the silhouette.
  config.dense_interpolation = 'nearest'
  config.color = True
  config.color_on_eval = False  # the reference applies colour noise to test images too (docs/quirks.md#q25)
  config.color_gain_max_delta = 0.3  # per-channel gain ~ U(1 - delta, 1 + delta)
  config.color_offset_max = 12.75  # offset ~ U(-max, max) on the 0..255 scale, one for all channels
  config.color_noise_std = 2.55  # on the 0..255 scale
  return config


def pipeline_config() -> ml_collections.ConfigDict:
  """The pipeline's settings; training configs embed it (e.g. as `config.data`)."""
  config = ml_collections.ConfigDict()
  # `get_builder(data_dir, dataset_name)`: a tfds data_dir holding interhand26m/, or a version directory.
  # 'interhand26m' is its default config, 'interacting' (DIR's data); 'interhand26m/all' adds single hands.
  config.data_dir = ''
  config.dataset_name = 'interhand26m'
  config.train_split = 'train'
  config.eval_split = 'test'
  config.shuffle_buffer_size = 2048  # encoded examples (tens of KB each) per process
  config.interleave_cycle_length = 16  # train files read at a time, interleaved record by record
  config.threadpool_size = 0  # private tf.data threadpool per dataset; 0 = TensorFlow's default (all cores)
  config.prefetch_batches = -1  # tf.data.AUTOTUNE
  config.eval_seed = 0  # only used for colour noise on eval (`augment.color_on_eval`)
  # Where the training augmentation runs: 'host' (tf.data, `augment`) or 'device' (inside the jit-compiled
  # train step, `device_augment`: the host only decodes; same distributions, JAX's random streams).
  config.augment_on = 'host'
  config.augment = augment_config()
  return config
