"""A two-hand scene for the render tests: posed MANO meshes from the reference fixture, cropped as DIR."""

import os

import numpy as np
import pytest

CROP_PX = 256


@pytest.fixture(scope='session')
def two_hands(fixture_dir):
  """Posed left and right MANO hands in front of a camera whose 256x256 crop they fill to 80 %.

  Returns a dict: `verts_left_m`, `verts_right_m` (778, 3) camera-frame metres; `faces_left`,
  `faces_right` (1538, 3) int; `K` (3, 3) crop intrinsics in pixels. The hands are turned so their
  broadest extent faces the camera and shifted so that they overlap in the image.
  """
  cases = np.load(os.path.join(fixture_dir, 'mano_cases.npz'))
  faces_right = np.load(os.path.join(fixture_dir, 'mano', 'MANO_RIGHT.npz'))['f'].astype(np.int64)
  faces_left = np.load(os.path.join(fixture_dir, 'mano', 'MANO_LEFT.npz'))['f'].astype(np.int64)
  verts_right_m = cases['manopth_center0.right.verts'][0].astype(np.float64)
  verts_left_m = cases['manopth_center0.left.verts'][0].astype(np.float64) + [0.05, 0.02, 0.03]
  verts_m = np.concatenate([verts_right_m, verts_left_m])
  verts_m -= verts_m.mean(axis=0)
  _, _, axes = np.linalg.svd(verts_m, full_matrices=False)
  verts_m = verts_m @ axes.T + [0.0, 0.0, 0.6]
  # DIR's crop: the joint 2D box of both hands, centred, spanning 80 % of the crop.
  xy_norm = verts_m[:, :2] / verts_m[:, 2:]
  mid = (xy_norm.min(axis=0) + xy_norm.max(axis=0)) / 2
  half_side = np.max(xy_norm.max(axis=0) - xy_norm.min(axis=0)) / 2 / 0.8
  focal_px = CROP_PX / 2 / half_side
  K = np.array(
      [
          [focal_px, 0.0, CROP_PX / 2 - focal_px * mid[0]],
          [0.0, focal_px, CROP_PX / 2 - focal_px * mid[1]],
          [0.0, 0.0, 1.0],
      ]
  )
  return {
      'verts_right_m': verts_m[:778],
      'verts_left_m': verts_m[778:],
      'faces_right': faces_right,
      'faces_left': faces_left,
      'K': K,
  }
