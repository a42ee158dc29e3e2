"""Image-space projection of joint features back onto the feature grid (paper Table 1).

Map: docs/architecture.md#image-space-projection.

Each function works on one hand of one example and is vmapped over the batch by the caller. Grid
cell (row r, col c) has its centre at (c + 0.5, r + 0.5) in cell units; joints are mapped from
normalised uv with (uv + 1) / 2 * S.
"""

import jax.numpy as jnp
import numpy as np

from dir_jax.mano import constants

BONE_PARENTS = np.asarray(constants.PARENTS_21[1:])  # bone k joins joint BONE_PARENTS[k] to joint k + 1
BONE_CHILDREN = np.arange(1, constants.NUM_JOINTS)
NUM_BONES = len(BONE_CHILDREN)
# Which joints' features a plane blends: (planes, ends) joint indices, for `planes_from_coefficients`.
BONE_ENDS = np.stack([BONE_PARENTS, BONE_CHILDREN], axis=1)  # (20, 2): bone k = parent, child
JOINT_ENDS = np.arange(constants.NUM_JOINTS)[:, None]  # (21, 1): plane j = joint j


def grid_centres(size: int) -> np.ndarray:
  """(S*S, 2) cell centres (x, y) in cell units, row-major (the reference's `img_gird`, docs/quirks.md#q12)."""
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  return np.stack([cols, rows], -1).reshape(-1, 2).astype(np.float32) + 0.5


def _hypot(x, y):
  return jnp.sqrt(x * x + y * y)


def point_to_segment_distance(points, a, b):
  """Distance of (P, 2) points to the segments a-b given as (K, 2) endpoints -> (P, K), in cell units.

  Follows the reference's `lineseg_dists`; a zero-length segment gives NaN (no guard, docs/quirks.md#q13).
  """
  d = (b - a) / _hypot(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1])[:, None]
  p = points[:, None, :]
  s = jnp.sum((a - p) * d, axis=-1)
  t = jnp.sum((p - b) * d, axis=-1)
  h = jnp.maximum(jnp.maximum(s, t), 0)
  pa = p - a
  c = pa[..., 0] * d[:, 1] - pa[..., 1] * d[:, 0]
  return _hypot(h, c)


def bone_coefficients(joints_uv, size: int, threshold: float, mask=None):
  """The released code's bone planes as scalar fields: per cell, bone and endpoint, the blend weight.

  A cell within `threshold` cells (strict) of bone k gets its endpoint features blended by distance,
  wa = 1 - da/(da+db), with `da = |p - a + 1e-6|` as F.pairwise_distance computes it; other cells get 0.
  Plane k is then `coef[:, k, 0] * f[parent_k] + coef[:, k, 1] * f[child_k]` (`BONE_ENDS`).

  Args:
    joints_uv: (21, 2) normalised uv of this stage's prediction (geometry in this dtype; float32).
    size: grid side S.
    threshold: mask radius in cells.
    mask: optional (S*S, 20) bool used instead of `distance < threshold` (a debugging input: the
      reference's own masks forced into this forward, see `refinement.JointImageRefinement`).

  Returns:
    coef: (S*S, 20, 2) masked endpoint weights. distance: (S*S, 20) cell-to-bone distance in cells.
  """
  joints_cell = (joints_uv + 1) / 2 * size
  grid = jnp.asarray(grid_centres(size), joints_uv.dtype)[:, None, :]
  a, b = joints_cell[BONE_PARENTS], joints_cell[BONE_CHILDREN]
  distance = point_to_segment_distance(grid[:, 0], a, b)
  dist_a = jnp.sqrt(jnp.sum((grid - a + 1e-6) ** 2, axis=-1))
  dist_b = jnp.sqrt(jnp.sum((grid - b + 1e-6) ** 2, axis=-1))
  weights = jnp.stack([1 - dist_a / (dist_a + dist_b), 1 - dist_b / (dist_a + dist_b)], axis=-1)
  inside = distance < threshold if mask is None else mask
  return jnp.where(inside[..., None], weights, 0), distance


def joint_coefficients(joints_uv, size: int, threshold: float, mask=None):
  """Multi-plane projection (`mfp`) as scalar fields: (S*S, 21, 1), 1 within `threshold` cells of joint j.

  Plane j is `coef[:, j, 0] * f[j]` (`JOINT_ENDS`). `mask`: optional (S*S, 21) bool used instead of
  the threshold, as in `bone_coefficients`. Returns (coef, distance (S*S, 21) in cells).
  """
  distance = _joint_distances(joints_uv, size)
  inside = distance < threshold if mask is None else mask
  return inside.astype(joints_uv.dtype)[..., None], distance


def planes_from_coefficients(coef, joint_feat, ends: np.ndarray):
  """Dense planes from scalar fields: (P, K, E) coefficients, (21, C) features -> (P, K * C).

  Plane k, channel k * C + c (bone-major, docs/quirks.md#q12) = sum over ends e of coef[:, k, e] * f[ends[k, e], c].
  """
  coef = coef.astype(joint_feat.dtype)
  planes = sum(coef[..., e, None] * joint_feat[ends[:, e]][None] for e in range(ends.shape[1]))
  return planes.reshape(coef.shape[0], -1)


def _joint_distances(joints_uv, size: int):
  joints_cell = (joints_uv + 1) / 2 * size
  grid = jnp.asarray(grid_centres(size))[:, None, :]
  return jnp.sqrt(jnp.sum((grid - joints_cell[None]) ** 2, axis=-1))  # (S*S, 21)


def project_single_plane(joints_uv, joint_feat, size: int, threshold: float):
  """Single-plane feature projection (`sfp`): all joints' features summed into one plane. (S, S, C)."""
  mask = (_joint_distances(joints_uv, size) < threshold).astype(joint_feat.dtype)
  return (mask @ joint_feat).reshape(size, size, -1)


def project_heatmaps(joints_uv, size: int, sigma: float):
  """Multi-plane heatmaps (`mhp`): a Gaussian of `sigma` cells per joint, no features. (S, S, 21)."""
  dist = _joint_distances(joints_uv, size)
  return jnp.exp(-0.5 * (dist / sigma) ** 2).reshape(size, size, -1)
