"""Rotation conversions used by the MANO layers, written for one example (vmap for batches).

Each follows the reference implementation's arithmetic (docs/quirks.md#q21) so that float32
results match, and is safe to differentiate everywhere (no NaN gradient at zero rotation).
"""

import jax.numpy as jnp


def _normalize(v, eps=1e-8):
  """v / max(|v|, eps), as manopth's `normalize_vector`."""
  return v / jnp.maximum(jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True)), eps)


def rot6d_to_matrix(six_d):
  """manopth's robust 6D -> rotation matrix (symmetric orthogonalisation).

  Args:
    six_d: (6,) two 3-vectors a, b; (1,0,0, 0,1,0) is the identity.

  Returns:
    (3, 3) rotation matrix whose columns are x', y', z.
  """
  x = _normalize(six_d[0:3])
  y = _normalize(six_d[3:6])
  middle = _normalize(x + y)
  orthmid = _normalize(x - y)
  x = _normalize(middle + orthmid)
  y = _normalize(middle - orthmid)
  z = _normalize(jnp.cross(x, y))
  return jnp.stack([x, y, z], axis=-1)


def axis_angle_to_matrix_quat(axis_angle):
  """manopth's `batch_rodrigues`: axis-angle -> quaternion -> matrix.

  The angle is |aa + 1e-8| (1e-8 added to every component before the norm), the axis is aa / angle.

  Args:
    axis_angle: (3,) radians.

  Returns:
    (3, 3) rotation matrix.
  """
  angle = jnp.sqrt(jnp.sum((axis_angle + 1e-8) ** 2))
  axis = axis_angle / angle
  half = 0.5 * angle
  quat = jnp.concatenate([jnp.cos(half)[None], jnp.sin(half) * axis])
  w, x, y, z = quat / jnp.sqrt(jnp.sum(quat * quat))
  w2, x2, y2, z2 = w * w, x * x, y * y, z * z
  wx, wy, wz, xy, xz, yz = w * x, w * y, w * z, x * y, x * z, y * z
  return jnp.stack(
      [
          w2 + x2 - y2 - z2,
          2 * xy - 2 * wz,
          2 * wy + 2 * xz,
          2 * wz + 2 * xy,
          w2 - x2 + y2 - z2,
          2 * yz - 2 * wx,
          2 * xz - 2 * wy,
          2 * wx + 2 * yz,
          w2 - x2 - y2 + z2,
      ]
  ).reshape(3, 3)


def axis_angle_to_matrix(axis_angle):
  """IntagHand's `rodrigues_batch`: I + sin(t) L + (1 - cos(t)) L^2 with t = |aa| + 1e-8.

  Args:
    axis_angle: (3,) radians.

  Returns:
    (3, 3) rotation matrix.
  """
  sq = jnp.sum(axis_angle * axis_angle)
  # |aa| with a finite gradient at 0 (the reference's value there is 1e-8 either way).
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  angle = norm + 1e-8
  ax, ay, az = axis_angle / angle
  zero = jnp.zeros_like(ax)
  skew = jnp.stack([zero, -az, ay, az, zero, -ax, -ay, ax, zero]).reshape(3, 3)
  return jnp.eye(3, dtype=axis_angle.dtype) + jnp.sin(angle) * skew + (1 - jnp.cos(angle)) * (skew @ skew)
