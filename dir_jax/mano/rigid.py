"""Rigid motions and mirroring of ground-truth MANO parameters (numpy, one hand at a time).

The ground-truth layer (`layer.gt_mano`) poses a hand as `V = R_root (v - J0) + J0 + trans`, with
`v` the hand in its rest-wrist frame and `J0` the rest wrist of the shaped template (it depends on
the betas). A rigid motion `X -> R X + t` of the posed hand is therefore the parameter change
    R_root' = R R_root,    trans' = R (J0 + trans) + t - J0,
and mirroring `X -> F X` (F = diag(-1, 1, 1)) turns a hand into the other side's hand with
    R_root' = F R_root F,  axis-angles (ax, ay, az) -> (ax, -ay, -az),  trans' = F (J0 + trans) - J0'.
These are exact, so data preparation can store parameters in the camera frame, and augmentations can
rotate or flip the hands without touching vertices.

Parameters travel as a `dict` with keys `root_rotmat` (3, 3), `hand_pose` (45,) PCA coefficients,
`betas` (10,), `trans` (3,) metres.
"""

from typing import Mapping

import numpy as np

from dir_jax.mano.asset import ManoAsset

MIRROR_X = np.diag([-1.0, 1.0, 1.0])
PARAM_KEYS = ('root_rotmat', 'hand_pose', 'betas', 'trans')


def rest_wrist(asset: ManoAsset, betas: np.ndarray) -> np.ndarray:
  """(3,) metres: the rest wrist `J0` of the template shaped by `betas` (10,)."""
  v_shaped = np.asarray(asset.v_template, np.float64) + np.einsum(
      'vcb,b->vc', np.asarray(asset.shapedirs, np.float64), np.asarray(betas, np.float64)
  )
  return np.asarray(asset.J_regressor, np.float64)[0] @ v_shaped


def transform_params(
    asset: ManoAsset, params: Mapping[str, np.ndarray], rotation: np.ndarray, translation_m: np.ndarray
) -> dict[str, np.ndarray]:
  """Parameters of the hand moved by `X -> rotation @ X + translation_m`.

  Args:
    asset: the hand's MANO model.
    params: the hand's parameters (see the module docstring).
    rotation: (3, 3) rotation matrix.
    translation_m: (3,) metres.

  Returns:
    New parameters (float32); pose and betas are unchanged.
  """
  rotation = np.asarray(rotation, np.float64)
  j0 = rest_wrist(asset, params['betas'])
  trans = rotation @ (j0 + np.asarray(params['trans'], np.float64)) + translation_m - j0
  return {
      'root_rotmat': (rotation @ np.asarray(params['root_rotmat'], np.float64)).astype(np.float32),
      'hand_pose': np.asarray(params['hand_pose'], np.float32),
      'betas': np.asarray(params['betas'], np.float32),
      'trans': trans.astype(np.float32),
  }


def mirror_params(source: ManoAsset, target: ManoAsset, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Parameters of `target` (the other side) that reproduce the mirror image (x -> -x) of a hand.

  Exact when `target` is the mirror of `source` (as the official MANO files are, up to the left
  file's shapedirs defect, which `load_mano_pair` repairs).

  Args:
    source: MANO model of the hand's side.
    target: MANO model of the other side.
    params: the hand's parameters; `hand_pose` are `source` PCA coefficients.

  Returns:
    Parameters for `target` (float32).
  """
  pose_aa = np.asarray(source.hands_mean, np.float64) + np.asarray(params['hand_pose'], np.float64) @ np.asarray(
      source.hands_components, np.float64
  )
  mirrored_aa = (pose_aa.reshape(15, 3) * np.array([1.0, -1.0, -1.0])).reshape(45)
  target_pca = (mirrored_aa - np.asarray(target.hands_mean, np.float64)) @ np.linalg.inv(
      np.asarray(target.hands_components, np.float64)
  )
  betas = np.asarray(params['betas'], np.float64)
  trans = MIRROR_X @ (rest_wrist(source, betas) + np.asarray(params['trans'], np.float64)) - rest_wrist(target, betas)
  return {
      'root_rotmat': (MIRROR_X @ np.asarray(params['root_rotmat'], np.float64) @ MIRROR_X).astype(np.float32),
      'hand_pose': target_pca.astype(np.float32),
      'betas': betas.astype(np.float32),
      'trans': trans.astype(np.float32),
  }
