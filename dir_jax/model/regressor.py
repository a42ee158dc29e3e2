"""MANO parameter regression: the initial regressor (stage 0) and the refinement regressor.

Map: docs/architecture.md#initial-regressor, docs/architecture.md#joint-space-regression.

A MANO head emits 64 numbers per hand: [0:6] 6D root rotation, [6:51] 45 pose-PCA coefficients,
[51:61] 10 betas, [61] weak-perspective scale s, [62:64] translation (tu, tv) (docs/quirks.md#q3).
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dir_jax.mano import ManoPair, network_mano
from dir_jax.model.layers import ConvBNReLUConv, full_precision

MANO_PARA_DIM = 64


def project_weak_perspective(xyz_m, camera):
  """uv = s * xyz[..., :2] + (tu, tv); xyz (B, N, 3) metres, camera (B, 3) -> (B, N, 2)."""
  return camera[:, None, 0:1] * xyz_m[..., :2] + camera[:, None, 1:3]


def hand_outputs(mano: ManoPair, para_left, para_right, offset, center_idx: int) -> dict:
  """Runs MANO and the projection for both hands' 64-vectors.

  Returns a stage result: `mano_para_{side}` (B, 64), `camera_{side}` (B, 3) = (s, tu, tv),
  `joint_xyz_{side}` (B, 21, 3) and `mesh_xyz_{side}` (B, 778, 3) in metres centred at `center_idx`,
  `joint_uv_{side}` (B, 21, 2) and `mesh_uv_{side}` (B, 778, 2) in [-1, 1], and `offset` (B, 3)
  = right root - left root in units of 0.15 m.
  """
  result = {'offset': offset}
  for side, para in (('left', para_left), ('right', para_right)):
    chex.assert_shape(para, (None, MANO_PARA_DIM))
    verts, joints = network_mano(mano[side], para[:, :51], para[:, 51:61], center_idx=center_idx)
    camera = para[:, 61:64]
    result.update(
        {
            f'mano_para_{side}': para,
            f'camera_{side}': camera,
            f'joint_xyz_{side}': joints,
            f'mesh_xyz_{side}': verts,
            f'joint_uv_{side}': project_weak_perspective(joints, camera),
            f'mesh_uv_{side}': project_weak_perspective(verts, camera),
        }
    )
  return result


def mano_head_bias_init(camera_scale: float):
  """Bias initialiser of a 64-vector head: zeros, with the weak-perspective scale (entry 61) at
  `camera_scale` (uv per metre). Only random initialisation uses it; converted weights replace it."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[61].set(camera_scale)

  return init


class InitRegressor(nn.Module):
  """Stage 0 from c4: per-hand sigmoid attention pooling, MANO heads, offset from the mean of c4.

  docs/architecture.md#initial-regressor.
  """

  center_idx: int = 0
  attention_dim: int = 1024  # hidden channels of the attention branch
  camera_scale_init: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, c4, mano: ManoPair, train: bool):
    chex.assert_rank(c4, 4)
    offset = nn.Dense(3, name='offset', dtype=self.dtype)(jnp.mean(c4, axis=(1, 2)))
    paras = {}
    for side in ('left', 'right'):
      attn = jax.nn.sigmoid(
          ConvBNReLUConv(self.attention_dim, 1, kernel=3, name=f'attention_{side}', dtype=self.dtype)(c4, train)
      )
      self.sow('intermediates', f'attention_{side}_out', attn)
      # Attention pooling; the denominator's 1e-8 is the reference's (docs/quirks.md#q16).
      pooled = jnp.sum(c4 * attn, axis=(1, 2)) / (jnp.sum(attn, axis=(1, 2)) + 1e-8)
      paras[side] = nn.Dense(
          MANO_PARA_DIM, name=f'mano_{side}', dtype=self.dtype, bias_init=mano_head_bias_init(self.camera_scale_init)
      )(pooled)
    return hand_outputs(
        mano, full_precision(paras['left']), full_precision(paras['right']), full_precision(offset), self.center_idx
    )


class RefinementRegressor(nn.Module):
  """The refinement stages' joint-space regression (the reference's `RegressorOffset`, docs/quirks.md#q9).

  Fresh parameters from [joint features, previous parameters].

  Not residual: the previous 64-vector is an input, not a base to add to.
  """

  center_idx: int = 0
  camera_scale_init: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feat_left, feat_right, prev: dict, mano: ManoPair):
    batch = feat_left.shape[0]
    flat_left = feat_left.reshape(batch, -1)  # joint-major: index j * C + c
    flat_right = feat_right.reshape(batch, -1)
    para = {}
    for side, flat in (('left', flat_left), ('right', flat_right)):
      inputs = jnp.concatenate([flat, prev[f'mano_para_{side}'].astype(flat.dtype)], axis=-1)
      para[side] = nn.Dense(
          MANO_PARA_DIM, name=f'mano_{side}', dtype=self.dtype, bias_init=mano_head_bias_init(self.camera_scale_init)
      )(inputs)
      para[side] = full_precision(para[side])
    offset_in = jnp.concatenate([flat_left, flat_right, prev['offset'].astype(flat_left.dtype)], axis=-1)
    offset = full_precision(nn.Dense(3, name='offset', dtype=self.dtype)(offset_in))
    return hand_outputs(mano, para['left'], para['right'], offset, self.center_idx)
