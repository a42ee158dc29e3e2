"""Plane fusion (paper Figure 2, image space): both hands' projected planes -> one 256-channel feature map.

The released code concatenates the planes of both hands, (B, S, S, 2 x planes x C), and runs a
Sequential[conv 3x3, BN, ReLU, conv 1x1] over them. Every plane is a sum of scalar fields times joint
feature vectors (`image_space.planes_from_coefficients`), and the 3x3 conv is linear in the planes, so

  conv(planes)(p) = sum over taps t, planes k, ends e of coef[p + t, k, e] * (f[ends[k, e]] @ W[t, k]).

`factored_plane_conv` computes the right-hand side: per example, the (taps x planes x ends) products of a
C-vector with a C x O kernel block, then one matrix product of the shifted coefficients (an im2col of
the scalar fields, S*S x taps*planes*ends) with them. For the released `bone` projection at S = 32
that is about 0.4 GFLOP per image instead of 12.1, the same numbers up to float rounding, and neither
the planes nor their gradient is ever materialised. `method='dense'` builds the planes and convolves,
as the reference does; both read the same parameters.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dir_jax.model.config import FUSIONS
from dir_jax.model.image_space import planes_from_coefficients
from dir_jax.model.layers import BatchNorm, conv


def factored_plane_conv(coef, joint_feat, kernel, ends: np.ndarray):
  """A stride-1, 'same'-padded conv over planes given as scalar fields, without building the planes.

  Equals `conv(planes_from_coefficients(coef, joint_feat, ends))` (no bias) up to float rounding.

  Args:
    coef: (S, S, K, E) scalar fields of one example (K planes, E feature vectors per plane).
    joint_feat: (J, C) joint features of one example.
    kernel: (kh, kw, K * C, O) HWIO kernel of the conv over the (S, S, K * C) planes (odd kh, kw).
    ends: (K, E) integer array, the joint whose features plane k takes as its e-th term.

  Returns:
    (S, S, O) in the features' dtype.
  """
  size = coef.shape[0]
  kh, kw, _, out = kernel.shape
  num_planes, num_ends = ends.shape
  chex.assert_shape(coef, (size, size, num_planes, num_ends))
  chex.assert_shape(kernel, (kh, kw, num_planes * joint_feat.shape[-1], out))
  ends_feat = joint_feat[ends]  # (K, E, C)
  blocks = kernel.reshape(kh * kw, num_planes, joint_feat.shape[-1], out)
  # (taps, K, E, O): each end's features through its plane's kernel block, for every tap.
  products = jnp.einsum('kec,tkco->tkeo', ends_feat, blocks.astype(joint_feat.dtype))
  padded = jnp.pad(coef.astype(joint_feat.dtype), ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0), (0, 0)))
  windows = jnp.stack([padded[i : i + size, j : j + size] for i in range(kh) for j in range(kw)], axis=2)
  return lax.dot_general(windows.reshape(size * size, -1), products.reshape(-1, out), (((1,), (0,)), ((), ()))).reshape(
      size, size, out
  )


class _FactoredPlaneConv(nn.Module):
  """The fusion's first conv (3x3, planes -> O, with bias) on scalar fields: `factored_plane_conv`, vmapped.

  Its variables are exactly an `nn.Conv`'s (`kernel` (3, 3, K * C, O) with the same initialiser,
  `bias` (O,)), so checkpoints of either method load in the other.
  """

  features: int
  ends: tuple[tuple[int, ...], ...]
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, coef, joint_feat):
    ends = np.asarray(self.ends)
    kernel = self.param(
        'kernel',
        nn.initializers.lecun_normal(),
        (3, 3, 2 * ends.shape[0] * joint_feat.shape[-1], self.features),
        jnp.float32,
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    dtype = self.dtype or jnp.promote_types(joint_feat.dtype, jnp.float32)
    # Both hands' planes are one concatenation: hand h's plane k is plane h * K + k of the conv input.
    both_ends = np.concatenate([ends, ends + joint_feat.shape[2]], axis=0)
    per_example = lambda c, f: factored_plane_conv(c, f, kernel.astype(dtype), both_ends)
    batch, size = coef.shape[:2]
    coef = coef.reshape(batch, size, size, -1, ends.shape[1])  # hands x planes -> planes
    feat = joint_feat.reshape(batch, -1, joint_feat.shape[-1]).astype(dtype)  # hands x joints -> joints
    return jax.vmap(per_example)(coef, feat) + bias.astype(dtype)


class PlaneFusion(nn.Module):
  """The reference's stage `fusion`: Sequential[conv 3x3 over both hands' planes, BN, ReLU, conv 1x1].

  Children '0', '1', '3' as the reference's state dict. `method`: 'factored' (`factored_plane_conv`,
  the default) or 'dense' (planes built and convolved, as the reference computes them).

  Call: coef (B, S, S, 2, K, E) float32 scalar fields of both hands (left, right), joint_feat
  (B, 2, J, C) -> (B, S, S, features).
  """

  features: int
  ends: tuple[tuple[int, ...], ...]
  method: str = 'factored'
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, coef, joint_feat, train: bool):
    ends = np.asarray(self.ends)
    batch, size = coef.shape[:2]
    chex.assert_shape(coef, (batch, size, size, 2, *ends.shape))
    chex.assert_shape(joint_feat, (batch, 2, None, None))
    if self.method == 'factored':
      x = _FactoredPlaneConv(self.features, self.ends, dtype=self.dtype, name='0')(coef, joint_feat)
    elif self.method == 'dense':
      planes = jax.vmap(jax.vmap(planes_from_coefficients, in_axes=(1, 0, None), out_axes=1), in_axes=(0, 0, None))(
          coef.reshape(batch, size * size, 2, *ends.shape), joint_feat, ends
      )
      planes = planes.reshape(batch, size, size, -1)  # (B, S*S, 2, K*C) -> left planes, then right
      x = conv(self.features, 3, padding=1, name='0', dtype=self.dtype)(planes)
    else:
      raise ValueError(f'fusion method must be one of {FUSIONS}, got {self.method!r}')
    x = nn.relu(BatchNorm(name='1')(x, train))
    return conv(self.features, 1, name='3', dtype=self.dtype)(x)
