"""Images per second of the tf.data input pipeline at 256x256: decode only, decode + augment, full train.

Generates a small synthetic raw InterHand2.6M (`data_prep.synthetic`), builds it with the real
`interhand26m` builder, keeps its encoded
examples in memory, and measures three pipelines in alternating rounds (median reported):
  decode      encoded example -> `decode_example` (JPEG image, PNG seg and dense)
  augment     decode + `augment.augment` (blur p=0.3, warp, colour), the training map
  train       `create_train_dataset` as training runs it with the augmentation on the host (file
              reading, shuffle, batching, labels shrunk to the released heads' 32x32 grid)
  lean        the same stream with `augment_on='device'`: read, decode, shrink the labels, batch; what
              the host does when the train step augments on the device
each with a private tf.data threadpool of 1 thread (per-core figures) and with TensorFlow's default
pool (all cores). The ratios augment / decode and lean / train are measured within the same run.
Last line: `host images/s per core: N`, the lean stream on 1 thread.

  .venv/bin/python bench/input_pipeline.py [--examples 48] [--batch 32] [--seconds 4] [--rounds 3]
"""

import os
import statistics
import tempfile
import time
from typing import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from dir_jax import cli
from dir_jax.data import augment, input_pipeline, settings
from data_prep import synthetic
from data_prep.interhand26m.interhand26m_dataset_builder import build
from dir_jax.mano import load_mano_pair


def images_per_second(ds: tf.data.Dataset, batch_size: int, seconds: float) -> float:
  """Throughput of iterating `ds` (batches) for about `seconds`, after two warm-up batches."""
  batches = iter(ds)
  for _ in range(2):
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(batches)
    count += 1
  return count * batch_size / (time.perf_counter() - start)


RELEASED_LABEL_SIDE = 32  # the released model's head grid, `label_grid.label_side`

FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_integer('examples', 48, 'synthetic examples to build', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('batch', 32, 'batch size', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float('seconds', 4.0, 'seconds per measurement', lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_integer('rounds', 3, 'alternating rounds (median reported)', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  input_pipeline.hide_gpus_from_tensorflow()
  workdir = tempfile.mkdtemp(prefix='bench_input_pipeline_')
  raw_dir, data_dir = os.path.join(workdir, 'raw'), os.path.join(workdir, 'tfds')
  synthetic.generate(raw_dir, num_train=FLAGS.examples, num_test=0, seed=0)
  build(raw_dir, data_dir)
  pair = load_mano_pair(os.path.join(raw_dir, 'mano'))
  builder = input_pipeline.get_builder(data_dir)
  constants = augment.mano_constants(pair)

  def pipeline(name: str, threads: int) -> tf.data.Dataset:
    config = settings.pipeline_config()
    config.threadpool_size = threads
    config.shuffle_buffer_size = FLAGS.examples
    if name in ('train', 'lean'):
      config.augment_on = 'device' if name == 'lean' else 'host'
      return input_pipeline.create_train_dataset(
          builder, config, pair, batch_size=FLAGS.batch, seed=0, label_size=RELEASED_LABEL_SIDE
      )
    encoded = input_pipeline.read_encoded(builder, 'train', config).cache().repeat().enumerate()
    if name == 'decode':
      prepare = lambda index, raw: input_pipeline.decode_example(raw)
    else:
      prepare = lambda index, raw: augment.augment(
          input_pipeline.decode_example(raw), tf.stack([tf.constant(0, tf.int64), index]), config.augment, constants
      )
    ds = encoded.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(FLAGS.batch, drop_remainder=True).prefetch(2).with_options(input_pipeline.dataset_options(config))

  variants = [(name, threads) for threads in (1, 0) for name in ('decode', 'augment', 'train', 'lean')]
  results = {variant: [] for variant in variants}
  for _ in range(FLAGS.rounds):
    for setting in variants:
      results[setting].append(images_per_second(pipeline(*setting), FLAGS.batch, FLAGS.seconds))
  cores = len(os.sched_getaffinity(0))
  print(
      f'{FLAGS.examples} synthetic 256x256 examples, batch {FLAGS.batch}, {FLAGS.rounds} rounds of '
      f'{FLAGS.seconds:g} s, median; {cores} cores available'
  )
  for (name, threads), values in results.items():
    pool = '1 thread' if threads == 1 else 'all cores'
    print(f'  {name:8s} {pool:10s} {statistics.median(values):8.1f} images/s')
  median = {variant: statistics.median(values) for variant, values in results.items()}
  for threads in (1, 0):
    pool = '1 thread' if threads == 1 else 'all cores'
    print(f'augment / decode throughput ({pool}): {median[("augment", threads)] / median[("decode", threads)]:.2f}')
    print(f'lean / train throughput ({pool}): {median[("lean", threads)] / median[("train", threads)]:.2f}')
  batch = next(iter(tfds.as_numpy(pipeline('lean', 0))))
  print(
      f'host-to-device bytes per training example: {sum(v.nbytes for v in batch.values()) / FLAGS.batch / 1e6:.3f} MB'
  )
  print(f'host images/s per core: {median[("lean", 1)]:.1f}')


if __name__ == '__main__':
  cli.run(main)
