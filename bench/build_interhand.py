"""Peak memory of a whole local build of `interhand26m` (planning, conversion, writing), small and large.

Writes two synthetic raw InterHand2.6M train splits (`data_prep.synthetic`, frontal rig), of
`--small` and of `--num_train` images, and builds each in a fresh process that imports the builder,
builds in-process (`build(..., beam=False)`) and reports its peak RSS (`ru_maxrss`). Enough images make
the serialized examples exceed the local writer's in-memory shuffle buffer
(`LOCAL_SHUFFLE_BUFFER_BYTES`), so the large build runs the path a full-size build takes (spilling
to disk buckets). The ratio measured in one run is the large build's peak over the small one's;
the absolute figures are printed beside it.

  .venv/bin/python bench/build_interhand.py [--num_train 4800] [--small 32]

The last line is `peak RSS GB: N` (the large build).
"""

import os
import sys

# Keep this file's folder off the import path (bench/ is not a package).
sys.path = [p for p in sys.path if os.path.abspath(p or '.') != os.path.dirname(os.path.abspath(__file__))]

# pylint: disable=wrong-import-position
import json
import subprocess
import tempfile
import time
from typing import Sequence

from absl import flags

from dir_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, os, resource, sys, time
from data_prep.interhand26m import interhand26m_dataset_builder as module
imported_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
builder = module.build(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
folder = builder.data_dir
written = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if '.tfrecord' in f)
print(json.dumps({'seconds': seconds, 'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  'imported_kb': imported_kb, 'examples': sum(s.num_examples for s in builder.info.splits.values()),
                  'tfrecord_bytes': written, 'buffer_bytes': module.LOCAL_SHUFFLE_BUFFER_BYTES}))
"""


def build_in_child(raw_dir: str, data_dir: str) -> dict:
  """Builds in a fresh Python process; its report (seconds, peak_kb, examples, ...)."""
  out = subprocess.run(
      [sys.executable, '-c', CHILD, raw_dir, data_dir], check=True, capture_output=True, text=True, cwd=REPO
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_integer('num_train', 4800, 'train images of the large build', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('small', 32, 'train images of the small build', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  from data_prep import synthetic  # pylint: disable=import-outside-toplevel

  reports = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, num_train in (('small', FLAGS.small), ('large', FLAGS.num_train)):
      raw_dir = os.path.join(tmp, f'raw_{name}')
      start = time.perf_counter()
      synthetic.generate(raw_dir, num_train=num_train, num_test=0, seed=0, rig='frontal')
      print(f'{name}: synthetic raw dataset of {num_train} train images written in {time.perf_counter() - start:.0f} s')
      reports[name] = build_in_child(raw_dir, os.path.join(tmp, f'tfds_{name}'))
  gb = lambda kb: kb / 1e6
  for name, r in reports.items():
    print(
        f'{name} build: {r["examples"]} examples, {r["tfrecord_bytes"] / 1e6:.1f} MB of TFRecords '
        f'({r["tfrecord_bytes"] / r["examples"] / 1e3:.1f} kB/example), {r["seconds"]:.0f} s, peak RSS '
        f'{gb(r["peak_kb"]):.3f} GB (after imports {gb(r["imported_kb"]):.3f} GB)'
    )
  large = reports['large']
  print(
      f'in-memory shuffle buffer: {large["buffer_bytes"] / 2**20:.0f} MiB; the large build '
      f'{"exceeds" if large["tfrecord_bytes"] > large["buffer_bytes"] else "stays within"} it'
  )
  print(f'ratio peak RSS large / small: {large["peak_kb"] / reports["small"]["peak_kb"]:.3f}')
  print(f'peak RSS GB: {gb(large["peak_kb"]):.3f}')


if __name__ == '__main__':
  cli.run(main)
