"""Images per second of the tf.data input pipeline at 256x256: decode only, decode + augment, full train.

Generates a small synthetic raw InterHand2.6M (`data_prep.synthetic`), builds it with the real
`interhand26m` builder, keeps its encoded
examples in memory, and measures three pipelines in alternating rounds (median reported):
  decode      encoded example -> `decode_example` (JPEG image, PNG seg and dense)
  augment     decode + `augment.augment` (blur p=0.3, warp, colour), the training map
  train       `create_train_dataset` as training runs it (file reading, shuffle, batching included)
each with a private tf.data threadpool of 1 thread (per-core figures) and with TensorFlow's default
pool (all cores). The ratio augment / decode is measured within the same run.

  .venv/bin/python bench/input_pipeline.py [--examples 48] [--batch 32] [--seconds 4] [--rounds 3]
"""

import argparse
import os
import statistics
import tempfile
import time

import tensorflow as tf

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


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--examples', type=int, default=48)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--seconds', type=float, default=4.0)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()

  input_pipeline.hide_gpus_from_tensorflow()
  workdir = tempfile.mkdtemp(prefix='bench_input_pipeline_')
  raw_dir, data_dir = os.path.join(workdir, 'raw'), os.path.join(workdir, 'tfds')
  synthetic.generate(raw_dir, num_train=args.examples, num_test=0, seed=0)
  build(raw_dir, data_dir)
  pair = load_mano_pair(os.path.join(raw_dir, 'mano'))
  builder = input_pipeline.get_builder(data_dir)
  constants = augment.mano_constants(pair)

  def pipeline(name: str, threads: int) -> tf.data.Dataset:
    config = settings.pipeline_config()
    config.threadpool_size = threads
    config.shuffle_buffer_size = args.examples
    if name == 'train':
      return input_pipeline.create_train_dataset(builder, config, pair, batch_size=args.batch, seed=0)
    encoded = input_pipeline.read_encoded(builder, 'train', config).cache().repeat().enumerate()
    if name == 'decode':
      prepare = lambda index, raw: input_pipeline.decode_example(raw)
    else:
      prepare = lambda index, raw: augment.augment(
          input_pipeline.decode_example(raw), tf.stack([tf.constant(0, tf.int64), index]), config.augment, constants)
    ds = encoded.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(args.batch, drop_remainder=True).prefetch(2).with_options(input_pipeline.dataset_options(config))

  variants = [(name, threads) for threads in (1, 0) for name in ('decode', 'augment', 'train')]
  results = {variant: [] for variant in variants}
  for _ in range(args.rounds):
    for setting in variants:
      results[setting].append(images_per_second(pipeline(*setting), args.batch, args.seconds))
  cores = len(os.sched_getaffinity(0))
  print(f'{args.examples} synthetic 256x256 examples, batch {args.batch}, {args.rounds} rounds of '
        f'{args.seconds:g} s, median; {cores} cores available')
  for (name, threads), values in results.items():
    pool = '1 thread' if threads == 1 else 'all cores'
    print(f'  {name:8s} {pool:10s} {statistics.median(values):8.1f} images/s')
  for threads in (1, 0):
    ratio = statistics.median(results[('augment', threads)]) / statistics.median(results[('decode', threads)])
    print(f'augment / decode throughput ({"1 thread" if threads == 1 else "all cores"}): {ratio:.2f}')


if __name__ == '__main__':
  main()
