"""Memory and time of planning an InterHand2.6M split (`raw.plan_split`) at a fraction of real size.

Writes annotation JSONs shaped as the real train split's (`data_prep.synthetic.write_annotations_at_scale`:
data.json, camera.json, MANO_NeuralAnnot.json, joint_3d.json; the real train split has 1,361,062
images over about 70 captures, data.json about 833 MB), then plans the split in a fresh process so
the generation does not count: peak RSS (`ru_maxrss`) and wall time of the child, which imports the
builder's modules, plans, and reports. Image files are not written; the plan is made with
`check_image_files=False` (one `os.path.isfile` per selected image is left out of the time).
The ratio measured in one run is peak RSS over data.json's size.

  .venv/bin/python bench/plan_interhand.py --fraction 0.125 [--out DIR]

The last line is `peak RSS GB: N`.
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

REAL_TRAIN_IMAGES = 1_361_062
CHILD = """
import json, resource, sys, time
from data_prep.interhand26m import raw
imported_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
plan, skipped = raw.plan_split(sys.argv[1], 'train', check_image_files=False)
seconds = time.perf_counter() - start
print(json.dumps({'seconds': seconds, 'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  'imported_kb': imported_kb, 'selected': len(plan), 'plan_bytes': plan.nbytes,
                  'record_bytes': plan.records.itemsize, 'skipped': dict(skipped)}))
"""


def plan_in_child(raw_dir: str) -> dict:
  """Runs `raw.plan_split` in a fresh Python process; its report (seconds, peak_kb, ...)."""
  out = subprocess.run(
      [sys.executable, '-c', CHILD, raw_dir],
      check=True,
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_float('fraction', 0.125, 'of the real train split (1,361,062 images)', lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_string('out', None, 'folder for the annotation files (default: temporary)', flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  # pylint: disable=import-outside-toplevel
  from data_prep import synthetic
  from data_prep.interhand26m import raw

  with tempfile.TemporaryDirectory() as tmp:
    raw_dir = FLAGS.out or tmp
    num_images = round(FLAGS.fraction * REAL_TRAIN_IMAGES)
    start = time.perf_counter()
    written = synthetic.write_annotations_at_scale(raw_dir, 'train', num_images)
    generate_s = time.perf_counter() - start
    sizes = {kind: os.path.getsize(raw.annotation_path(raw_dir, 'train', kind)) for kind in raw.ANNOTATION_KINDS}
    report = plan_in_child(raw_dir)

  peak_gb, data_gb = report['peak_kb'] * 1024 / 1e9, sizes['data'] / 1e9
  print(
      f'fraction {FLAGS.fraction} of the real train split: {num_images} images, {written["frames"]} frames, '
      f'70 captures; written in {generate_s:.0f} s'
  )
  print('annotation files: ' + ', '.join(f'{kind} {size / 1e6:.0f} MB' for kind, size in sizes.items()))
  print(
      f'planning (one process): {report["seconds"]:.1f} s, '
      f'{1e6 * report["seconds"] / num_images:.1f} us per image; selected {report["selected"]}, '
      f'skipped {report["skipped"]}'
  )
  print(
      f'plan: {report["plan_bytes"] / 1e6:.1f} MB, {report["plan_bytes"] / max(report["selected"], 1):.1f} bytes '
      f'per selected image ({report["record_bytes"]} in the record index)'
  )
  print(
      f'peak RSS {peak_gb:.3f} GB (after imports, before planning: {report["imported_kb"] * 1024 / 1e9:.3f} GB); '
      f'ratio peak RSS / data.json size: {peak_gb / data_gb:.2f}'
  )
  print(f'peak RSS GB: {peak_gb:.3f}')
  return 0


if __name__ == '__main__':
  cli.run(main)
