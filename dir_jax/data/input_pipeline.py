"""tf.data input pipeline over the converted InterHand2.6M TFRecords (`schema`), train and eval.

Batches are dicts of numpy arrays (`numpy_batches`), per process, ready for
`jax.make_array_from_process_local_data`; B is the per-process batch size:
  image                 (B, 256, 256, 3) uint8 RGB; normalise on the accelerator (`normalize.normalize_image`)
  seg                   (B, 256, 256) int32 in {SEG_BACKGROUND, SEG_RIGHT, SEG_LEFT}; training batches
                        made with `label_size=S` carry (B, S, S) uint8 (below)
  dense                 (B, 256, 256, 3) float32 in [0, 1], template coordinates, 0 off the hands; with
                        `label_size=S`, (B, S, S, 3)
  intrinsics            (B, 3, 3) float32 pixels, schema's pixel convention; after augmentation the 2x2
                        block may be a general matrix (`augment` docstring): project with all of it
  mano_<side>_<key>     float32, side in (left, right): root_rotmat (B, 3, 3), hand_pose (B, 45) PCA
                        coefficients, betas (B, 10), trans (B, 3) metres; camera frame
  capture, frame, image_id  (B,) int32
  valid                 (B,) bool, eval only: False on padding rows
  joint_3d_cam_m, joint_3d_valid, hand_type  eval only, when the dataset stores them
                        (`has_triangulated_joints`): (B, 42, 3) float32 metres, (B, 42) bool, (B,)
                        int32 index into `schema.HAND_TYPES`
The camera name (a string) is not carried.

Train (`create_train_dataset`): the process's shard of the split (`process_split`), in epochs of
`train_steps_per_epoch` batches (equal on every process, remainder dropped), each epoch's files and
records shuffled with a seed, decoded and augmented (`augment.augment`) with per-example stateless
seeds (`config.augment_on == 'host'`), or only decoded (`'device'`: the train step augments the batch,
`device_augment`). The whole stream is a function of (seed, process_index, process_count, data), and
`start_step` resumes it exactly. Lean batches: the trainer asks for the labels at the grid the losses
read them on (`label_size`, `label_grid.label_side`), resampled on the host with the losses' rules
(`shrink_labels`), so that a 256x256 image travels with 32x32 labels (0.21 MB per example instead of
1.25 MB).

Eval (`create_eval_dataset`): the process's shard in a fixed order, decoded, not augmented (colour noise
only when `augment.color_on_eval`), and padded so that every example is seen exactly once and every
process runs the same number of steps: after the shard's examples come copies of its first example
with `valid` False (finite values, so masked metrics never meet NaN), up to `num_steps * B` rows.

TensorFlow is kept off the GPUs (`hide_gpus_from_tensorflow`) before any dataset is built.
"""

import json
import math
import os
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from dir_jax.data import augment
from dir_jax.data import label_grid
from dir_jax.data import schema
from dir_jax.mano.asset import ManoPair

_ENCODED_FEATURES = ('image', 'seg', 'dense')
_ID_FEATURES = ('capture', 'frame', 'image_id')
AUGMENT_ON = ('host', 'device')  # where the training augmentation runs (`config.augment_on`)


def hide_gpus_from_tensorflow() -> None:
  """Makes TensorFlow see no GPU, so that it never takes accelerator memory (idempotent)."""
  if tf.config.get_visible_devices('GPU'):
    tf.config.set_visible_devices([], 'GPU')


def get_builder(data_dir: str, name: str = 'interhand26m') -> tfds.core.DatasetBuilder:
  """A read-only builder of the prepared dataset.

  Args:
    data_dir: a tfds data_dir (its newest `<dataset>[/<config>]/<version>/` is read) or a builder
      directory (holding dataset_info.json).
    name: 'DATASET' or 'DATASET/CONFIG' in `data_dir` (e.g. 'interhand26m', 'interhand26m/all');
      without a config, the default config recorded beside the configs when they were built, or
      the versions directly under DATASET/ (datasets built without configs, interhand26m < 1.2.0).

  Returns:
    The builder, made from the files alone, so that reading does not depend on whether the builder's
    code (data_prep) is imported, nor on its version.

  Raises:
    FileNotFoundError: no prepared version there; the message says how to build one.
  """
  hide_gpus_from_tensorflow()
  if tf.io.gfile.exists(os.path.join(data_dir, 'dataset_info.json')):
    return tfds.builder_from_directory(data_dir)
  dataset, _, config = name.partition('/')
  dataset_dir = os.path.join(data_dir, dataset)
  config = config or _default_config(dataset_dir)
  folder = os.path.join(dataset_dir, config) if config else dataset_dir
  versions = [
      entry
      for entry in (tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else [])
      if tfds.core.Version.is_valid(entry.rstrip('/'))
      and tf.io.gfile.exists(os.path.join(folder, entry, 'dataset_info.json'))
  ]
  if not versions:
    raise FileNotFoundError(
        f'no prepared {name!r} in {data_dir} (looked for {folder}/<version>/dataset_info.json): convert '
        f'InterHand2.6M with `tfds build data_prep/interhand26m --config {config or "interacting"} --manual_dir RAW '
        f'--data_dir {data_dir}` (README, "Data"), or point config.data.data_dir at the tfds data_dir'
    )
  newest = max((entry.rstrip('/') for entry in versions), key=tfds.core.Version)
  return tfds.builder_from_directory(os.path.join(folder, newest))


def _default_config(dataset_dir: str) -> str:
  """The default config tfds records when it builds a dataset with configs ('' when none)."""
  path = os.path.join(dataset_dir, '.config', 'metadata.json')
  if not tf.io.gfile.exists(path):
    return ''
  with tf.io.gfile.GFile(path) as f:
    return json.load(f).get('default_config_name') or ''


def process_split(split: str, process_index: int, process_count: int) -> tfds.typing.SplitArg:
  """The `process_index`-th of `process_count` disjoint, covering parts of `split` (sizes differ by <= 1)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def process_seed(seed: int, process_index: int) -> int:
  """A 32-bit seed for one process, different for each (seed, process_index)."""
  return int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])


def dataset_options(config: ml_collections.ConfigDict) -> tf.data.Options:
  """Deterministic order; a private threadpool of `config.threadpool_size` threads when positive."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.max_intra_op_parallelism = 1
  if config.threadpool_size > 0:
    options.threading.private_threadpool_size = config.threadpool_size
  return options


def read_encoded(
    builder: tfds.core.DatasetBuilder, split: tfds.typing.SplitArg, config: ml_collections.ConfigDict
) -> tf.data.Dataset:
  """tfds examples of `split` in a fixed order, image, seg and dense still encoded (see `decode_example`)."""
  read_config = tfds.ReadConfig(options=dataset_options(config), try_autocache=False)
  return builder.as_dataset(
      split=split,
      shuffle_files=False,
      read_config=read_config,
      decoders={name: tfds.decode.SkipDecoding() for name in _ENCODED_FEATURES},
  )


def decode_example(raw: dict) -> dict[str, tf.Tensor]:
  """A tfds example with encoded images -> the flat example of `augment` (image uint8)."""
  size = schema.IMAGE_SIZE
  image = tf.io.decode_image(raw['image'], channels=3, expand_animations=False)
  image.set_shape([size, size, 3])
  seg = tf.cast(tf.io.decode_png(raw['seg'], channels=1)[..., 0], tf.int32)
  seg.set_shape([size, size])
  dense = tf.cast(tf.io.decode_png(raw['dense'], channels=3), tf.float32) / 255.0
  dense.set_shape([size, size, 3])
  example = {'image': image, 'seg': seg, 'dense': dense, 'intrinsics': tf.cast(raw['intrinsics'], tf.float32)}
  for side in schema.SIDES:
    for key in schema.MANO_KEYS:
      example[augment.mano_feature(side, key)] = tf.cast(raw['mano'][side][key], tf.float32)
  example.update({name: tf.cast(raw[name], tf.int32) for name in _ID_FEATURES})
  return example


def shrink_labels(example: dict[str, tf.Tensor], label_size: int) -> dict[str, tf.Tensor]:
  """`seg` (H, W) and `dense` (H, W, 3) of one example -> (S, S) uint8 and (S, S, 3) float32, S = `label_size`.

  The losses' rules (`losses.downsample_seg_nearest`, `losses.downsample_dense_bilinear`): seg takes
  source pixel floor(i * H / S) (`label_grid.nearest_indices`), dense is bilinear with half-pixel
  centres and no antialiasing, so the losses read the same labels as from the full-size maps.
  """
  height, width = example['seg'].shape
  if not 0 < label_size <= min(height, width):
    raise ValueError(f'label_size must be in [1, {min(height, width)}] for {height}x{width} labels, got {label_size}')
  rows = label_grid.nearest_indices(height, label_size)
  cols = label_grid.nearest_indices(width, label_size)
  seg = tf.gather(tf.gather(example['seg'], rows, axis=0), cols, axis=1)
  dense = tf.image.resize(example['dense'], [label_size, label_size], method='bilinear', antialias=False)
  return dict(example, seg=tf.cast(seg, tf.uint8), dense=tf.cast(dense, tf.float32))


def check_augment_on(config: ml_collections.ConfigDict) -> str:
  """`config.augment_on` ('host' or 'device'), or a ValueError naming the choices."""
  if config.augment_on not in AUGMENT_ON:
    raise ValueError(
        f'config.data.augment_on must be one of {AUGMENT_ON} (where the training augmentation runs), '
        f'got {config.augment_on!r}'
    )
  return config.augment_on


def train_steps_per_epoch(builder: tfds.core.DatasetBuilder, split: str, batch_size: int, process_count: int) -> int:
  """Batches per epoch, the same on every process: the smallest process shard // `batch_size`."""
  smallest = min(
      builder.info.splits[process_split(split, index, process_count)].num_examples for index in range(process_count)
  )
  if smallest < batch_size:
    raise ValueError(f'a process shard of {split!r} has {smallest} examples, fewer than the batch {batch_size}')
  return smallest // batch_size


def _shard_files(
    builder: tfds.core.DatasetBuilder, split: tfds.typing.SplitArg
) -> tuple[list[str], list[int], list[int]]:
  """The TFRecord files of `split` with the records to skip and take in each."""
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(f'the train stream reads TFRecord files; this dataset is {builder.info.file_format}')
  files = builder.info.splits[split].file_instructions
  takes = [f.take if f.take >= 0 else f.examples_in_shard - f.skip for f in files]
  return [os.fspath(f.filename) for f in files], [f.skip for f in files], takes


def create_train_dataset(
    builder: tfds.core.DatasetBuilder,
    config: ml_collections.ConfigDict,
    mano: ManoPair,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    label_size: int | None = None,
) -> tf.data.Dataset:
  """The endless, shuffled, augmented training stream of one process, from step `start_step` on.

  Epoch e (`train_steps_per_epoch` batches on every process) reads the process shard's files in an
  order shuffled with (process seed, e), `config.interleave_cycle_length` files at a time, shuffles the
  records in a buffer seeded the same way and keeps the first steps * batch_size of them (the rest
  is dropped, as with drop_last). Example i of epoch e is augmented with a stateless seed made of
  (process seed, e, i), unless `config.augment_on` is 'device' (then it is only decoded). The stream is therefore a function of the arguments and the data, and starting
  at `start_step` gives exactly the batches an uninterrupted run gets from that step; it costs
  reading (not decoding) up to one epoch of records.

  Args:
    builder: `get_builder(...)`.
    config: `settings.pipeline_config()`.
    mano: the MANO pair (left fix applied); its constants drive the flip and rotation of the targets.
    batch_size: per-process batch size.
    seed: the run's seed.
    process_index, process_count: this process and the number of processes (`jax.process_index()`,
      `jax.process_count()`).
    start_step: the first batch's step.
    label_size: side S of the seg and dense labels (`shrink_labels`, after any host augmentation);
      None keeps them at the image's size.

  Returns:
    A dataset of batches (module docstring, without `valid`).
  """
  hide_gpus_from_tensorflow()
  augment_on_host = check_augment_on(config) == 'host'
  constants = augment.mano_constants(mano)
  local_seed = tf.constant(process_seed(seed, process_index), tf.int64)
  split = process_split(config.train_split, process_index, process_count)
  filenames, skips, takes = _shard_files(builder, split)
  steps_per_epoch = train_steps_per_epoch(builder, config.train_split, batch_size, process_count)
  start_epoch, start_batch = divmod(start_step, steps_per_epoch)
  decoders = {name: tfds.decode.SkipDecoding() for name in _ENCODED_FEATURES}

  def epoch_records(epoch):
    epoch_seed = tf.stack([local_seed, epoch])
    order = tf.random.experimental.stateless_shuffle(tf.range(len(filenames)), epoch_seed)
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.gather(filenames, order),
            tf.gather(tf.constant(skips, tf.int64), order),
            tf.gather(tf.constant(takes, tf.int64), order),
        )
    )
    records = files.interleave(
        lambda filename, skip, take: tf.data.TFRecordDataset(filename).skip(skip).take(take),
        cycle_length=min(config.interleave_cycle_length, len(filenames)),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    shuffle_seed = tf.random.stateless_uniform([], epoch_seed, minval=None, maxval=None, dtype=tf.int64)
    records = records.shuffle(config.shuffle_buffer_size, seed=shuffle_seed)
    records = records.take(steps_per_epoch * batch_size).enumerate()
    return records.map(lambda index, record: (epoch, index, record))

  def prepare(epoch, index, record):
    example_seed = tf.random.experimental.stateless_fold_in(tf.stack([local_seed, epoch]), index)
    example = decode_example(builder.info.features.deserialize_example(record, decoders=decoders))
    if augment_on_host:
      example = augment.augment(example, example_seed, config.augment, constants)
    return example if label_size is None else shrink_labels(example, label_size)

  ds = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_records)
  ds = ds.skip(start_batch * batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(config.prefetch_batches)
  return ds.with_options(dataset_options(config))


def eval_num_steps(builder: tfds.core.DatasetBuilder, split: str, batch_size: int, process_count: int) -> int:
  """Batches every process runs over `split`: enough for the largest process shard."""
  largest = max(
      builder.info.splits[process_split(split, index, process_count)].num_examples for index in range(process_count)
  )
  return math.ceil(largest / batch_size)


def has_triangulated_joints(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the dataset stores triangulated joints and hand types (interhand26m >= 1.1.0)."""
  return all(name in builder.info.features for name in ('joint_3d_cam_m', 'joint_3d_valid', 'hand_type'))


def has_single_hand_examples(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the dataset holds single-hand examples: interhand26m's 'all' config, whose examples of a
  single hand carry all-zero MANO parameters for the other hand."""
  return builder.builder_config is not None and builder.builder_config.name == 'all'


def create_eval_dataset(
    builder: tfds.core.DatasetBuilder,
    config: ml_collections.ConfigDict,
    *,
    batch_size: int,
    split: str | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> tuple[tf.data.Dataset, int]:
  """One pass over `split` (default `config.eval_split`), padded (module docstring).

  Returns:
    The dataset of batches (with `valid`) and its number of batches, the same for every process.
  """
  hide_gpus_from_tensorflow()
  split = config.eval_split if split is None else split
  local_split = process_split(split, process_index, process_count)
  num_examples = builder.info.splits[local_split].num_examples
  if num_examples == 0:
    raise ValueError(f'process {process_index} of {process_count} has no examples of {split!r}')
  num_steps = eval_num_steps(builder, split, batch_size, process_count)
  color_seed = process_seed(config.eval_seed, process_index)
  has_joint_3d = has_triangulated_joints(builder)

  def prepare(index, raw):
    example = decode_example(raw)
    if config.augment.color and config.augment.color_on_eval:
      image = augment.color_augment(
          tf.cast(example['image'], tf.float32), tf.stack([tf.constant(color_seed, tf.int64), index]), config.augment
      )
      example['image'] = augment.to_uint8(image)
    if has_joint_3d:
      example.update(
          joint_3d_cam_m=tf.cast(raw['joint_3d_cam_m'], tf.float32),
          joint_3d_valid=tf.cast(raw['joint_3d_valid'], tf.bool),
          hand_type=tf.argmax(tf.cast(tf.equal(raw['hand_type'], schema.HAND_TYPES), tf.int32), output_type=tf.int32),
      )
    return dict(example, valid=tf.constant(True))

  ds = (
      read_encoded(builder, local_split, config)
      .enumerate()
      .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  )
  padding = ds.take(1).map(lambda example: dict(example, valid=tf.constant(False)))
  ds = ds.concatenate(padding.repeat(num_steps * batch_size - num_examples))
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(config.prefetch_batches)
  return ds.with_options(dataset_options(config)), num_steps


# What reading a damaged TFRecord file raises (DataLossError for a bad checksum or a truncated record).
READ_ERRORS = (tf.errors.OpError,)


def damaged_files(builder: tfds.core.DatasetBuilder, split: tfds.typing.SplitArg) -> list[tuple[str, str]]:
  """(file, error) for every TFRecord file of `split` that does not read to its end (checksums included).

  Reads each file once, without decoding: for naming the damaged file after a read error.
  """
  damaged = []
  for path in _shard_files(builder, split)[0]:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except READ_ERRORS as e:
      damaged.append((path, e.message.splitlines()[0] if e.message else type(e).__name__))
  return damaged


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates `ds` as dicts of numpy arrays."""
  return iter(tfds.as_numpy(ds))
