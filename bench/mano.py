"""Hands per second: the JAX MANO layer (jit) against smplx's PyTorch MANO, same CPU, same run.

Both evaluate the same work: axis-angle pose (root + 45), 10 betas, translation -> 778 vertices and
16 joints (our layer also appends the 5 fingertips). Warm-up runs first; timings are medians.

  .venv/bin/python bench/mano.py [--mano_dir DIR] [--batches 1,256] [--repeats 20]
"""

import os
import statistics
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from dir_jax import cli
from dir_jax.mano import gt_mano, load_mano, rotation
from dir_jax.mano.asset import find_mano_file

DEFAULT_MANO_DIR = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'fixtures', 'dir_reference', 'mano')


def median_seconds(fn, repeats):
  """Median seconds of `repeats` calls of `fn()` after one warm-up call."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('mano_dir', DEFAULT_MANO_DIR, 'folder with MANO_RIGHT (.pkl or .npz)', flag_values=FLAGS)
flags.DEFINE_list('batches', ['1', '256'], 'batch sizes, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('repeats', 20, 'timed calls (median)', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  import smplx  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  path = find_mano_file(FLAGS.mano_dir, 'right')
  asset = load_mano(path, 'right')

  @jax.jit
  def jax_layer(root_aa, hand_aa, betas, trans):
    root = jax.vmap(rotation.axis_angle_to_matrix)(root_aa)
    return gt_mano(asset, root, hand_aa + asset.hands_mean, betas, trans, pose_is_pca=False)

  print(
      f'device: {jax.devices()[0].device_kind}, jax {jax.__version__}, torch {torch.__version__}, '
      f'torch threads {torch.get_num_threads()}, MANO {path}'
  )
  print(f'{"batch":>6} {"jax hands/s":>12} {"smplx hands/s":>14} {"ratio jax/smplx":>16}')
  for batch in [int(b) for b in FLAGS.batches]:
    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(0, s, shape).astype(np.float32)
        for s, shape in ((0.5, (batch, 3)), (0.3, (batch, 45)), (1.0, (batch, 10)), (0.1, (batch, 3)))
    ]
    jax_inputs = [jnp.asarray(x) for x in inputs]
    jax_s = median_seconds(lambda: jax.block_until_ready(jax_layer(*jax_inputs)), FLAGS.repeats)
    smplx_layer = smplx.MANO(path, is_rhand=True, use_pca=False, flat_hand_mean=False, batch_size=batch)
    torch_inputs = [torch.from_numpy(x) for x in inputs]

    def run_smplx():
      with torch.no_grad():
        smplx_layer(
            global_orient=torch_inputs[0], hand_pose=torch_inputs[1], betas=torch_inputs[2], transl=torch_inputs[3]
        )

    smplx_s = median_seconds(run_smplx, FLAGS.repeats)
    print(f'{batch:>6} {batch / jax_s:>12.0f} {batch / smplx_s:>14.0f} {smplx_s / jax_s:>16.2f}')
  return 0


if __name__ == '__main__':
  cli.run(main)
