"""Conversion throughput of the InterHand2.6M builder: examples per second on one core, by stage.

One example = read and decode the raw JPEG, MANO (NeuralAnnot -> camera frame -> vertices, both
hands), the crop (bilinear warp), seg + dense rendering of both hands at 256x256, and encoding (JPEG
image, two PNGs). The stages are timed one after another on the same records in one run, so their
shares of the total are ratios measured together; the end-to-end converter (`convert.Converter`,
what the builder runs per example) is timed as well. XLA is limited to one thread before JAX loads.

  .venv/bin/python bench/convert_interhand.py [--raw_dir RAW] [--num_examples 16] [--repeats 5]

Without --raw_dir a synthetic raw dataset (`data_prep.synthetic`) is written to a temporary folder.
"""

import os
import sys

# This file is named like the package it measures: keep its folder off the import path.
sys.path = [p for p in sys.path if os.path.abspath(p or '.') != os.path.dirname(os.path.abspath(__file__))]
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=false' ' intra_op_parallelism_threads=1'
).strip()

# pylint: disable=wrong-import-position
import statistics
import tempfile
import time
from typing import Sequence

import jax
import numpy as np
from absl import flags

from data_prep import synthetic
from data_prep.interhand26m import convert
from data_prep.interhand26m import preprocess as pp
from data_prep.interhand26m import raw
from dir_jax import cli
from dir_jax.data import schema
from dir_jax.render import project_perspective

STAGES = ('read + decode JPEG', 'MANO (2 hands)', 'crop (warp)', 'render seg + dense', 'encode')


def _stage_seconds(record, converter):
  """Seconds spent in each stage of `preprocess.convert_example` for one record, in STAGES order."""
  times = [time.perf_counter()]
  _, image = convert.read_image(record['image_path'])
  times.append(time.perf_counter())
  verts = {}
  for side in schema.SIDES:
    params = pp.mano_params_camera(converter.pair[side], record['mano'][side], record['camera'])
    verts[side] = pp.hand_mesh(converter.pair[side], params)[0]
  times.append(time.perf_counter())
  K_px = record['camera']['K_px']
  affine = pp.crop_affine(project_perspective(np.concatenate(list(verts.values())), K_px)[:, :2])
  crop = pp.warp_to_crop(image, affine)
  times.append(time.perf_counter())
  seg, dense = pp.render_targets(verts, converter.pair, pp.crop_intrinsics(K_px, affine), converter.vertex_colors)
  times.append(time.perf_counter())
  pp.encode_jpeg(crop), pp.encode_png(seg), pp.encode_png(dense)
  times.append(time.perf_counter())
  return np.diff(times)


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('raw_dir', None, 'raw InterHand2.6M layout (default: synthetic)', flag_values=FLAGS)
flags.DEFINE_integer('num_examples', 16, 'train examples to generate', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 5, 'timing repeats', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  with tempfile.TemporaryDirectory() as tmp:
    raw_dir = FLAGS.raw_dir or tmp
    if not FLAGS.raw_dir:
      synthetic.generate(raw_dir, num_train=FLAGS.num_examples, num_test=0, seed=0)
    plan, _ = raw.plan_split(raw_dir, 'train')
    records = [plan.record(i) for i in range(len(plan))]
    converter = convert.Converter(raw.mano_dir(raw_dir))
    records = [r for r in records if converter(r)[0] is None]  # also warms up the JIT
    stage_s = np.array([[_stage_seconds(r, converter) for r in records] for _ in range(FLAGS.repeats)])
    per_example_s = np.median(stage_s, axis=0).mean(axis=0)  # median over repeats, mean over records
    end_to_end_s = []
    for _ in range(FLAGS.repeats):
      start = time.perf_counter()
      for record in records:
        converter(record)
      end_to_end_s.append((time.perf_counter() - start) / len(records))
    end_to_end_s = statistics.median(end_to_end_s)

  print(
      f'device: {jax.devices()[0].device_kind}, jax {jax.__version__}, numpy {np.__version__}, one thread; '
      f'{len(records)} examples from {"--raw_dir " + FLAGS.raw_dir if FLAGS.raw_dir else "synthetic"}, '
      f'{FLAGS.repeats} repeats'
  )
  print(f'{"stage":<22} {"ms/example":>11} {"share":>7}')
  for name, seconds in zip(STAGES, per_example_s):
    print(f'{name:<22} {1e3 * seconds:>11.2f} {seconds / per_example_s.sum():>7.1%}')
  print(f'{"sum of stages":<22} {1e3 * per_example_s.sum():>11.2f}')
  print(f'{"end to end":<22} {1e3 * end_to_end_s:>11.2f}   -> {1.0 / end_to_end_s:.1f} examples/s per core')
  print(f'ratio render / end to end: {per_example_s[3] / end_to_end_s:.2f}')
  return 0


if __name__ == '__main__':
  cli.run(main)
