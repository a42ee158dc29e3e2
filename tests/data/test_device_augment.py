"""The device augmentations (`device_augment`) match the host ones (`augment`) and keep the targets exact."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from dir_jax.data import augment, device_augment, schema, settings
from tests.data.test_augment import CASES, check_targets_match_seg, flat_example, unmirrored_pca_pair

# Host vs device for the same geometry, both float32 with the same formulas: seg and nearest dense come
# out identical, intrinsics and MANO parameters within 1 float32 ulp (1.2e-4 px at the crops' ~1500 px
# focal lengths, 6e-8 on rotation entries; the device sums small products term by term, TF in its own
# order). Allow a few ulps.
INTRINSICS_RTOL = 1e-6
INTRINSICS_ATOL_PX = 1e-4  # entries near 0 (skew terms when fx != fy)
MANO_ATOL = 2e-6  # rotation entries, PCA coefficients, metres
# The sampling coordinates differ by float32 rounding (the device inverts the 2x2 warp in closed form,
# TensorFlow by LU): ~3e-5 px, times image gradients of up to 255 levels per pixel gives at most 0.008
# levels on 0..255 (0.0034 measured on the builder's crops; 0.0 for flips and integer shifts); bilinear
# dense in [0, 1] likewise 3.7e-5.
IMAGE_ATOL_LEVELS = 0.05
DENSE_BILINEAR_ATOL = 2e-4
# The same nearest rounding (half away from zero) on coordinates that differ by ~3e-5 px: a pixel
# whose source coordinate lies that close to a half-integer could take the other neighbour.
MAX_SEG_MISMATCH_FRACTION = 1e-3
# Motion blur: the same kernel (to float32 rounding) as a sum of shifted copies vs TF's depthwise conv.
BLUR_ATOL_LEVELS = 1e-3

SMALL_SIZE_PX = 64
NUM_SAMPLES = 4000  # keys for the distribution checks: a rate's standard error is <= 0.008


def all_off_config() -> ml_collections.ConfigDict:
  config = settings.augment_config()
  config.flip = config.rotate = config.zoom = config.translate = False
  config.motion_blur = config.color = False
  return config


@pytest.fixture(scope='module')
def constants(mano_pair):
  return augment.mano_constants(mano_pair)


@pytest.fixture(scope='module')
def hand_examples(examples):
  """Two 256x256 examples of the built dataset (builder form, both hands): a colour and a grey view."""
  return examples['test'][:2]


def device_example(example: dict) -> dict[str, jax.Array]:
  """A builder-form example as `device_augment.apply_geometry` takes it (image float32)."""
  return {key: jnp.asarray(value.numpy()) for key, value in flat_example(example).items()}


def device_geometry(geometry: dict[str, tf.Tensor]) -> dict[str, jax.Array]:
  return {key: jnp.asarray(value.numpy()) for key, value in geometry.items()}


def batch_of(examples: list[dict]) -> dict[str, jax.Array]:
  """The trainer's batch (uint8 image) of builder-form examples, plus a pass-through `image_id`."""
  flats = [device_example(example) for example in examples]
  batch = {key: jnp.stack([flat[key] for flat in flats]) for key in flats[0]}
  batch['image'] = batch['image'].astype(jnp.uint8)
  batch['image_id'] = jnp.arange(len(examples), dtype=jnp.int32)
  return batch


def random_batch(batch_size: int, seed: int = 0) -> dict[str, jax.Array]:
  """A small batch of random values in the trainer's layout (no real hands)."""
  rng = np.random.default_rng(seed)
  size = SMALL_SIZE_PX
  focal = rng.uniform(140, 160, batch_size)
  intrinsics = np.zeros((batch_size, 3, 3), np.float32)
  intrinsics[:, 0, 0], intrinsics[:, 1, 1] = focal, 1.02 * focal
  intrinsics[:, :2, 2], intrinsics[:, 2, 2] = size / 2 + rng.uniform(-2, 2, (batch_size, 2)), 1.0
  batch = {
      'image': jnp.asarray(rng.integers(0, 256, (batch_size, size, size, 3)), jnp.uint8),
      'seg': jnp.asarray(rng.integers(0, 3, (batch_size, size, size)), jnp.int32),
      'dense': jnp.asarray(rng.uniform(0, 1, (batch_size, size, size, 3)), jnp.float32),
      'intrinsics': jnp.asarray(intrinsics),
      'image_id': jnp.arange(batch_size, dtype=jnp.int32),
  }
  for side in schema.SIDES:
    rotations = np.linalg.qr(rng.normal(size=(batch_size, 3, 3)))[0]
    batch[device_augment.mano_feature(side, 'root_rotmat')] = jnp.asarray(rotations, jnp.float32)
    batch[device_augment.mano_feature(side, 'hand_pose')] = jnp.asarray(rng.normal(size=(batch_size, 45)), jnp.float32)
    batch[device_augment.mano_feature(side, 'betas')] = jnp.asarray(rng.normal(size=(batch_size, 10)), jnp.float32)
    trans = rng.normal(0, 0.05, (batch_size, 3)) + [0.0, 0.0, 0.8]
    batch[device_augment.mano_feature(side, 'trans')] = jnp.asarray(trans, jnp.float32)
  return batch


@pytest.fixture(scope='module')
def augment_fn(constants):
  """`augment_batch` jitted with the default config and the host constants closed over."""
  config = settings.augment_config()
  return jax.jit(functools.partial(device_augment.augment_batch, constants=constants, config=config))


@pytest.fixture(scope='module')
def augment_fn_with_constants_argument(constants):
  """`augment_batch` jitted with the default config, `DeviceManoConstants` passed as a jit argument."""
  jitted = jax.jit(functools.partial(device_augment.augment_batch, config=settings.augment_config()))
  device_constants = device_augment.DeviceManoConstants.from_host(constants)
  return lambda batch, key, step, **kwargs: jitted(batch, key, step, device_constants, **kwargs)


jitted_apply_geometry = jax.jit(device_augment.apply_geometry, static_argnames=('dense_interpolation',))


# 1. Everything off.


def test_all_off_returns_the_batch_unchanged(constants):
  batch = random_batch(2)
  out = jax.jit(functools.partial(device_augment.augment_batch, constants=constants, config=all_off_config()))(
      batch, jax.random.key(0), 3
  )
  assert set(out) == set(batch)
  for key, value in batch.items():
    assert out[key].dtype == value.dtype, key
    np.testing.assert_array_equal(out[key], value, err_msg=key)


# 2. Geometry exactness on rendered hands.


@pytest.mark.parametrize('name', ['rotation', 'zoom_out', 'flip', 'all'])
def test_geometry_keeps_targets_on_the_warped_seg(mano_pair, hand_examples, constants, name):
  out = jitted_apply_geometry(
      device_example(hand_examples[0]),
      device_geometry(CASES[name]),
      device_augment.DeviceManoConstants.from_host(constants),
  )
  check_targets_match_seg(mano_pair, out)


def test_random_augmentation_keeps_targets_on_the_seg(mano_pair, hand_examples, augment_fn):
  """The whole random augmentation (default config), batched; several keys so that flips occur."""
  batch = batch_of(hand_examples)
  flips = 0
  for step in range(3):
    out = augment_fn(batch, jax.random.key(5), step)
    assert out['image'].dtype == jnp.uint8
    for index in range(len(hand_examples)):
      example = {key: np.asarray(value[index]) for key, value in out.items()}
      check_targets_match_seg(mano_pair, example)
      geometry = device_augment.sample_augmentation(
          device_augment.example_key(jax.random.key(5), step, index), example['image'].shape, settings.augment_config()
      )['geometry']
      flips += int(geometry['flip'])
  assert 0 < flips < 3 * len(hand_examples), 'expected both flipped and unflipped examples'


# 3. The same as the host for the same parameters.


@pytest.mark.parametrize('dense_interpolation', augment.INTERPOLATIONS)
@pytest.mark.parametrize('name', list(CASES))
def test_geometry_matches_the_host(hand_examples, constants, name, dense_interpolation):
  example = hand_examples[1]
  host = augment.apply_geometry(flat_example(example), CASES[name], constants, dense_interpolation)
  device = jitted_apply_geometry(
      device_example(example),
      device_geometry(CASES[name]),
      device_augment.DeviceManoConstants.from_host(constants),
      dense_interpolation=dense_interpolation,
  )
  assert set(device) == set(host)
  np.testing.assert_allclose(device['intrinsics'], host['intrinsics'], rtol=INTRINSICS_RTOL, atol=INTRINSICS_ATOL_PX)
  for side in schema.SIDES:
    for key in schema.MANO_KEYS:
      feature = augment.mano_feature(side, key)
      np.testing.assert_allclose(device[feature], host[feature], rtol=0, atol=MANO_ATOL, err_msg=feature)
  np.testing.assert_allclose(device['image'], host['image'], rtol=0, atol=IMAGE_ATOL_LEVELS)
  seg_mismatch = np.mean(np.asarray(device['seg']) != host['seg'].numpy())
  assert seg_mismatch <= MAX_SEG_MISMATCH_FRACTION
  if dense_interpolation == 'nearest':
    # Nearest copies values: where seg agrees the source pixel is the same, so dense is identical.
    same = np.asarray(device['seg']) == host['seg'].numpy()
    np.testing.assert_array_equal(np.asarray(device['dense'])[same], host['dense'].numpy()[same])
  else:
    np.testing.assert_allclose(device['dense'], host['dense'], rtol=0, atol=DENSE_BILINEAR_ATOL)
  assert device['seg'].dtype == jnp.int32


def test_mirror_pose_mapping_matches_the_host_for_unmirrored_pca_bases(mano_pair, hand_examples):
  """Synthetic (and real) MANO's mirror mapping is the identity: perturb the left basis, as test_augment does."""
  constants = augment.mano_constants(unmirrored_pca_pair(mano_pair))
  example = hand_examples[1]
  host = augment.apply_geometry(flat_example(example), CASES['all'], constants)
  device = jitted_apply_geometry(
      device_example(example), device_geometry(CASES['all']), device_augment.DeviceManoConstants.from_host(constants)
  )
  for side in schema.SIDES:
    feature = augment.mano_feature(side, 'hand_pose')
    # PCA coefficients of O(1) through a 45-term sum of a non-orthogonal mapping: a few ulps more.
    np.testing.assert_allclose(device[feature], host[feature], rtol=0, atol=10 * MANO_ATOL, err_msg=feature)
    # A real test of the mapping: here it changes the coefficients of the hand that became this side.
    source = 'right' if side == 'left' else 'left'
    assert np.abs(np.asarray(device[feature]) - example['mano'][source]['hand_pose']).max() > 0.1


def test_unknown_dense_interpolation_is_refused(hand_examples, constants):
  with pytest.raises(ValueError, match='dense_interpolation'):
    device_augment.apply_geometry(
        device_example(hand_examples[0]), device_geometry(CASES['flip']), constants, dense_interpolation='cubic'
    )


@pytest.mark.parametrize('size_px, angle_rad', [(3, 0.3), (9, -2.0), (6, math.pi / 2), (8, 0.7)])
def test_motion_blur_matches_the_host(hand_examples, size_px, angle_rad):
  grid_px = settings.augment_config().motion_blur_max_size_px | 1
  host_kernel = augment.motion_blur_kernel(tf.constant(size_px), tf.constant(angle_rad), grid_px).numpy()
  device_kernel = device_augment.motion_blur_kernel(jnp.int32(size_px), jnp.float32(angle_rad), grid_px)
  np.testing.assert_allclose(device_kernel, host_kernel, rtol=0, atol=1e-7)
  # A 48x64 crop: a non-square image, both hands and background pixels; the host's pad and conv as
  # `augment.motion_blur`.
  image = hand_examples[0]['image'][80:128, 64:128].astype(np.float32)
  pad = grid_px // 2
  padded = tf.pad(image[None], [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  filters = tf.tile(host_kernel[:, :, None, None], [1, 1, 3, 1])
  host = tf.nn.depthwise_conv2d(padded, filters, [1, 1, 1, 1], 'VALID')[0].numpy()
  device = jax.jit(device_augment.motion_blur, static_argnums=3)(
      jnp.asarray(image), jnp.int32(size_px), jnp.float32(angle_rad), grid_px
  )
  np.testing.assert_allclose(device, host, rtol=0, atol=BLUR_ATOL_LEVELS)
  assert np.abs(np.asarray(device) - image).max() > 10.0, 'the blur must change the image'


def test_color_and_uint8_match_the_host():
  values = tf.constant([-3.0, 0.5, 1.5, 12.4, 12.6, 254.5, 255.4, 300.0])
  np.testing.assert_array_equal(device_augment.to_uint8(jnp.asarray(values.numpy())), augment.to_uint8(values))
  image = np.random.default_rng(2).uniform(0, 255, (4, 5, 3)).astype(np.float32)
  color = {'gain': jnp.array([0.8, 1.0, 1.2]), 'offset': jnp.float32(-3.0), 'noise': jnp.full((4, 5, 3), 0.5)}
  np.testing.assert_allclose(
      device_augment.apply_color(jnp.asarray(image), color), image * [0.8, 1.0, 1.2] - 2.5, rtol=1e-6
  )


# 4. Distributions of the draws.


def sample_many(config: ml_collections.ConfigDict) -> dict:
  keys = jax.random.split(jax.random.key(123), NUM_SAMPLES)
  sample = jax.jit(jax.vmap(lambda key: device_augment.sample_augmentation(key, (4, 4, 3), config)))
  return jax.tree.map(np.asarray, sample(keys))


def assert_uniform(values: np.ndarray, low: float, high: float) -> None:
  """Inside [low, high], reaching both ends, with a uniform's mean and standard deviation (loosely)."""
  width = high - low
  assert values.min() >= low and values.max() <= high
  assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width
  assert abs(values.mean() - (low + high) / 2) < 0.02 * width
  assert abs(values.std() - width / math.sqrt(12)) < 0.02 * width


CUSTOM = {
    'flip_prob': 0.2,
    'rotation_max_deg': 30.0,
    'zoom_max_delta': 0.25,
    'translation_max_px': 4.0,
    'motion_blur_prob': 0.6,
    'motion_blur_min_size_px': 2,
    'motion_blur_max_size_px': 5,
    'motion_blur_max_angle_deg': 10.0,
    'color_gain_max_delta': 0.1,
    'color_offset_max': 30.0,
    'color_noise_std': 7.0,
}


@pytest.mark.parametrize('overrides', [{}, CUSTOM], ids=['default', 'custom'])
def test_sampled_parameters_have_the_configured_distributions(overrides):
  config = settings.augment_config()
  config.update(overrides)
  samples = sample_many(config)
  geometry, blur, color = samples['geometry'], samples['motion_blur'], samples['color']
  assert abs(geometry['flip'].mean() - config.flip_prob) < 0.04
  assert_uniform(np.degrees(geometry['angle_rad']), -config.rotation_max_deg, config.rotation_max_deg)
  assert_uniform(geometry['zoom'], 1.0 - config.zoom_max_delta, 1.0 + config.zoom_max_delta)
  for axis in range(2):
    assert_uniform(geometry['translation_px'][:, axis], -config.translation_max_px, config.translation_max_px)
  assert abs(np.corrcoef(geometry['translation_px'].T)[0, 1]) < 0.1
  assert abs(blur['apply'].mean() - config.motion_blur_prob) < 0.04
  sizes = np.arange(config.motion_blur_min_size_px, config.motion_blur_max_size_px + 1)
  assert set(np.unique(blur['size_px'])) == set(sizes)
  counts = np.array([np.mean(blur['size_px'] == size) for size in sizes])
  assert np.all(np.abs(counts - 1 / len(sizes)) < 0.03)
  max_angle = config.motion_blur_max_angle_deg
  assert_uniform(np.degrees(blur['angle_rad']), -max_angle, max_angle)
  for channel in range(3):
    assert_uniform(color['gain'][:, channel], 1 - config.color_gain_max_delta, 1 + config.color_gain_max_delta)
  assert_uniform(color['offset'], -config.color_offset_max, config.color_offset_max)
  assert abs(color['noise'].mean()) < 0.01 * config.color_noise_std
  assert abs(color['noise'].std() / config.color_noise_std - 1.0) < 0.01


def test_switched_off_draws_are_the_identity():
  samples = sample_many(all_off_config())
  assert not samples['geometry']['flip'].any() and not samples['motion_blur']['apply'].any()
  assert np.all(samples['geometry']['angle_rad'] == 0.0) and np.all(samples['geometry']['zoom'] == 1.0)
  assert np.all(samples['geometry']['translation_px'] == 0.0)


# 5. Determinism.


def test_outputs_are_a_function_of_key_step_and_index(augment_fn_with_constants_argument):
  augment_fn = augment_fn_with_constants_argument
  batch = random_batch(4, seed=1)
  key = jax.random.key(7)
  first, again, next_step = augment_fn(batch, key, 5), augment_fn(batch, key, 5), augment_fn(batch, key, 6)
  for name in batch:
    np.testing.assert_array_equal(first[name], again[name], err_msg=name)
  assert not np.array_equal(first['image'], next_step['image'])
  assert not np.array_equal(first['intrinsics'], next_step['intrinsics'])
  np.testing.assert_array_equal(first['image_id'], batch['image_id'])
  # Row i of the batch is example index i: the same as a batch of one with first_index i.
  for index in range(4):
    single = augment_fn({name: value[index : index + 1] for name, value in batch.items()}, key, 5, first_index=index)
    for name in batch:
      np.testing.assert_array_equal(single[name][0], first[name][index], err_msg=f'{name} row {index}')
  # Rows differ from each other (each its own index), and a different key gives different draws.
  assert not np.array_equal(first['intrinsics'][0], first['intrinsics'][1])
  assert not np.array_equal(augment_fn(batch, jax.random.key(8), 5)['image'], first['image'])
