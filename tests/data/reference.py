"""Numpy reference of the geometric augmentation's targets, built on `dir_jax.mano.rigid`."""

import numpy as np

from dir_jax.data import augment, schema
from dir_jax.mano import rigid
from dir_jax.mano.asset import ManoPair

_OTHER = {'left': 'right', 'right': 'left'}


def rotation_2d(angle_rad: float) -> np.ndarray:
  cos, sin = np.cos(angle_rad), np.sin(angle_rad)
  return np.array([[cos, -sin], [sin, cos]])


def augmented_targets(
    pair: ManoPair,
    hands: dict,
    intrinsics: np.ndarray,
    flip: bool,
    angle_rad: float,
    zoom: float,
    translation_px,
    size: int = schema.IMAGE_SIZE,
):
  """Intrinsics (3, 3) and {side: params} after the warp p' = A (F p + w) + c - A c + t.

  The hands are mirrored with `rigid.mirror_params` (each becoming the other side) when flipped, then
  rotated about the optical axis with `rigid.transform_params`.
  """
  affine = zoom * rotation_2d(angle_rad)
  flip_linear = np.diag([-1.0, 1.0]) if flip else np.eye(2)
  flip_offset = np.array([size, 0.0]) if flip else np.zeros(2)
  centre = np.array([size / 2, size / 2])
  linear = affine @ flip_linear
  offset = affine @ flip_offset + centre - affine @ centre + np.asarray(translation_px, np.float64)
  intrinsics = np.asarray(intrinsics, np.float64)
  planar_motion = rotation_2d(angle_rad) @ flip_linear
  new_intrinsics = np.eye(3)
  new_intrinsics[:2, :2] = linear @ intrinsics[:2, :2] @ planar_motion.T
  new_intrinsics[:2, 2] = linear @ intrinsics[:2, 2] + offset
  if flip:
    hands = {_OTHER[side]: rigid.mirror_params(pair[side], pair[_OTHER[side]], hands[side]) for side in schema.SIDES}
  rotation = np.eye(3)
  rotation[:2, :2] = rotation_2d(angle_rad)
  hands = {side: rigid.transform_params(pair[side], hands[side], rotation, np.zeros(3)) for side in schema.SIDES}
  return new_intrinsics, hands


def flat_hands(example: dict) -> dict:
  """{side: params} of a flat example (`augment.mano_feature` keys), as numpy."""
  return {
      side: {key: np.asarray(example[augment.mano_feature(side, key)]) for key in schema.MANO_KEYS}
      for side in schema.SIDES
  }
