"""Interpenetration volume per example: numpy (`interpenetration_volume`, per pair on the host) against the
JAX version (`make_interpenetration_volume`, jitted and vmapped over the batch), same CPU, same run.

Both count the 5 mm voxels inside both hands of `--batch` pairs of posed MANO hands placed to interpenetrate
(random root rotations, PCA poses and shapes; the right wrist on the left palm, ~0.5 m from the origin),
float32 vertices as the network predicts them. Warm-up (and compilation) first; timings are medians.

  .venv/bin/python bench/mesh_volume.py [--batch 16] [--repeats 5] [--mano_dir DIR]
"""

import os
import sys
import tempfile
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, __file__.rsplit('/', 2)[0])  # the repository root, when run as a script

from bench.mano import median_seconds  # noqa: E402
from data_prep import synthetic_mano  # noqa: E402
from dir_jax import cli, mesh_volume  # noqa: E402
from dir_jax.mano import constants, gt_mano, load_mano_pair, rotation  # noqa: E402

CAMERA_M = np.array([0.0, 0.0, 0.5], np.float32)  # the left wrist
RIGHT_OVER_LEFT_M = np.array([-0.08, 0.01, 0.0], np.float32)  # the right wrist from the left one: on its palm

FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_integer('batch', 16, 'pairs of hands', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 5, 'timed calls (median)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string(
    'mano_dir',
    None,
    'folder with MANO_RIGHT and MANO_LEFT (.pkl or .npz); default: the synthetic pair',
    flag_values=FLAGS,
)


def posed_hands(mano, batch: int, seed: int = 0):
  """{side: (capped faces (F, 3), capped float32 vertices (batch, 779, 3) m)}, the hands interpenetrating."""
  rng = np.random.default_rng(seed)
  hands = {}
  for side in constants.SIDES:
    normal = lambda scale, shape: jnp.asarray(rng.normal(0, scale, (batch,) + shape), jnp.float32)
    root = jax.vmap(rotation.axis_angle_to_matrix)(normal(0.3, (3,)))
    wrist_m = CAMERA_M + (RIGHT_OVER_LEFT_M if side == 'right' else 0.0)
    trans = jnp.broadcast_to(wrist_m, (batch, 3))
    verts, _ = gt_mano(mano[side], root, normal(1.0, (45,)), normal(1.0, (10,)), trans, center_idx=0)
    loops = mesh_volume.boundary_loops(mano[side].faces)
    faces = mesh_volume.cap_faces(mano[side].faces, constants.NUM_VERTS, loops)
    hands[side] = faces, np.asarray(mesh_volume.cap_vertices(np.asarray(verts), loops))
  return hands


def main(argv: Sequence[str]) -> int:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  with tempfile.TemporaryDirectory() as folder:
    if FLAGS.mano_dir is None:
      raw = synthetic_mano.make_synthetic_mano(0)
      for side in constants.SIDES:
        synthetic_mano.write_mano_npz(raw[side], os.path.join(folder, f'MANO_{side.upper()}.npz'))
    mano = load_mano_pair(FLAGS.mano_dir or folder)
  hands = posed_hands(mano, FLAGS.batch)
  (faces_l, left), (faces_r, right) = hands['left'], hands['right']

  def run_numpy():
    return np.asarray([mesh_volume.interpenetration_volume(a, faces_l, b, faces_r) for a, b in zip(left, right)])

  volume = jax.jit(jax.vmap(mesh_volume.make_interpenetration_volume(faces_l, faces_r)))
  start = time.perf_counter()
  jax_cm3 = np.asarray(volume(left, right))
  compile_s = time.perf_counter() - start
  numpy_cm3 = run_numpy()
  voxel_cm3 = mesh_volume.VOXEL_M**3 * mesh_volume.CM3_PER_M3
  count_diff = np.abs(np.rint(jax_cm3 / voxel_cm3) - np.rint(numpy_cm3 / voxel_cm3))

  numpy_s = median_seconds(run_numpy, FLAGS.repeats) / FLAGS.batch
  jax_s = median_seconds(lambda: jax.block_until_ready(volume(left, right)), FLAGS.repeats) / FLAGS.batch
  print(
      f'device: {jax.devices()[0].device_kind}, jax {jax.__version__}, MANO {FLAGS.mano_dir or "synthetic"}, '
      f'{FLAGS.batch} pairs, voxel {mesh_volume.VOXEL_M * 1000:g} mm, window {mesh_volume.GRID_CELLS}^3'
  )
  print(
      f'IV cm^3: mean {numpy_cm3.mean():.3f}, min {numpy_cm3.min():.3f}, max {numpy_cm3.max():.3f}; '
      f'voxel counts jax - numpy: max |diff| {count_diff.max():.0f} ({np.count_nonzero(count_diff)} pairs differ)'
  )
  print(f'numpy: {numpy_s * 1e3:.2f} ms per example (one pair at a time)')
  print(f'jax:   {jax_s * 1e3:.2f} ms per example (jit + vmap over {FLAGS.batch}; first call {compile_s:.1f} s)')
  print(f'jax / numpy time per example: {jax_s / numpy_s:.2f}')
  return 0


if __name__ == '__main__':
  cli.run(main)
