"""The embedded default job (`make demo`) until training lands: the MANO layer on the synthetic hands.

Writes the synthetic MANO asset (official pickle layout and npz), poses both hands with the JAX
network layer in an interacting configuration, and renders them with the project's rasterizer:

  python -m dir_jax.demo --out outputs/demo

Outputs: `mano/MANO_{RIGHT,LEFT}.{pkl,npz}` with the generator's preview `mano/hands.png`, `hands_front.png` (camera view), `hands_side.png`
(side view), `hands_rest.png` (both hands in the rest pose) and `joints.json` (21 joints per hand, m).
"""

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dir_jax.mano import load_mano_pair, network_mano
from dir_jax.mano import synthetic
from dir_jax.render import overlay

# Pinhole camera of a 256x256 crop (OpenCV frame: x right, y down, z forward), as in the fixture.
CROP_K = np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]])


def _pose(six_d, pca_flex):
  """One 51-vector (6D root + 45 PCA) with only the first (flexion) PCA coefficient set."""
  pose = np.zeros(51, np.float32)
  pose[:6] = six_d
  pose[6] = pca_flex
  return pose


def _rotation_6d(axis, angle):
  """6D representation (first two columns) of the rotation `angle` about `axis`."""
  axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
  return np.concatenate([rot[:, 0], rot[:, 1]]).astype(np.float32)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='outputs/demo')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  mano_dir = os.path.join(args.out, 'mano')
  synthetic.write_all(mano_dir, args.seed)
  mano = load_mano_pair(mano_dir)

  # Fingers of the canonical hands point along +x (right) / -x (left); turn them to point up the image
  # (-y in the camera frame) with palms towards the camera, and place the hands side by side.
  scenes = {
      'rest': {'left': _pose(_rotation_6d([0, 0, 1], np.pi / 2), 0.0), 'right': _pose(_rotation_6d([0, 0, 1], -np.pi / 2), 0.0)},
      'front': {'left': _pose(_rotation_6d([0, 0, 1], np.pi / 2), 1.2), 'right': _pose(_rotation_6d([0, 0, 1], -np.pi / 2), -0.4)},
  }
  roots_m = {'left': np.array([-0.06, 0.08, 0.55]), 'right': np.array([0.06, 0.08, 0.6])}
  layer = jax.jit(network_mano, static_argnames='center_idx')
  joints_out = {}
  for name, poses in scenes.items():
    meshes = []
    for side, color in (('left', overlay.LEFT_HAND_RGB), ('right', overlay.RIGHT_HAND_RGB)):
      verts, joints = layer(mano[side], jnp.asarray(poses[side])[None], jnp.zeros((1, 10)), center_idx=0)
      meshes.append((np.asarray(verts[0]) + roots_m[side], np.asarray(mano[side].faces), color))
      joints_out[f'{name}_{side}'] = (np.asarray(joints[0]) + roots_m[side]).round(5).tolist()
    background = np.full((256, 256, 3), 235, np.uint8)
    overlay.save_png(os.path.join(args.out, f'hands_{name}.png'), overlay.render_overlay(background, meshes, CROP_K, alpha=1.0))
    if name == 'front':
      overlay.save_png(os.path.join(args.out, 'hands_side.png'), overlay.render_side_view(meshes, size=256, yaw_deg=90))
  with open(os.path.join(args.out, 'joints.json'), 'w') as f:
    json.dump(joints_out, f, indent=1)
  print(f'wrote {args.out}/hands_front.png, hands_side.png, hands_rest.png, joints.json and the synthetic MANO in {mano_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
