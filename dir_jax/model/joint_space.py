"""Joint-space modules of a refinement stage: the per-joint GCN and the inter-hand transformer.

Map: docs/architecture.md#joint-space.

Sequences are (B, J, C): one row per joint.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dir_jax.mano import constants
from dir_jax.model.layers import BatchNorm, full_precision


def skeleton_adjacency_entries():
  """(rows, cols) of the symmetric 21-joint skeleton adjacency, row-major: the order of `e_1` (docs/quirks.md#q7)."""
  adj = np.zeros((constants.NUM_JOINTS, constants.NUM_JOINTS), bool)
  for child, parent in enumerate(constants.PARENTS_21):
    if parent >= 0:
      adj[child, parent] = adj[parent, child] = True
  return np.nonzero(adj)


class PGraphConv(nn.Module):
  """SemGCN's high-order graph convolution with one weight matrix per joint (docs/quirks.md#q7).

  out = A0 @ (x W0_j) + A1 @ (x W1_j) + bias, where A0 = row-softmax of a matrix holding `e_0` on the
  diagonal and -9e15 elsewhere (exactly the identity: `e_0` has no effect) and A1 = row-softmax over
  the skeleton neighbours holding `e_1`.
  """

  features: int

  @nn.compact
  def __call__(self, x):
    num_joints, in_features = x.shape[-2:]
    w = self.param(
        'W',
        nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1),
        (2, num_joints, in_features, self.features),
        jnp.float32,
    )
    e_0 = self.param('e_0', nn.initializers.ones, (1, num_joints), jnp.float32)
    rows, cols = skeleton_adjacency_entries()
    e_1 = self.param('e_1', nn.initializers.ones, (1, len(rows)), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    w = w.astype(x.dtype)
    h0 = jnp.einsum('bji,jio->bjo', x, w[0])
    h1 = jnp.einsum('bji,jio->bjo', x, w[1])
    a0 = (
        jnp.full((num_joints, num_joints), -9e15, e_0.dtype)
        .at[np.arange(num_joints), np.arange(num_joints)]
        .set(e_0[0])
    )
    a1 = jnp.full((num_joints, num_joints), -9e15, e_1.dtype).at[rows, cols].set(e_1[0])
    a0 = jax.nn.softmax(a0, axis=1).astype(x.dtype)
    a1 = jax.nn.softmax(a1, axis=1).astype(x.dtype)
    return jnp.einsum('jk,bko->bjo', a0, h0) + jnp.einsum('jk,bko->bjo', a1, h1) + bias.astype(x.dtype)


class GraphConvBlock(nn.Module):
  """SemGCN's `_GraphConv`: ReLU(BN(PGraphConv(x))), BN over (batch, joints)."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.relu(BatchNorm(name='bn')(PGraphConv(self.features, name='gconv')(x), train))


class _GraphConvLayers(nn.Module):
  """The `gconv_layers` list, children '0', '1', ..."""

  features: int
  num_layers: int

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.num_layers):
      x = GraphConvBlock(self.features, name=str(i))(x, train)
    return x


class JointGCN(nn.Module):
  """`ResSimplePGCN`: a stack of graph convolutions with no residual connection (docs/quirks.md#q8).

  (B, 21, C) -> (B, 21, features).
  """

  features: int = 128
  num_layers: int = 4

  @nn.compact
  def __call__(self, x, train: bool):
    return _GraphConvLayers(self.features, self.num_layers, name='gconv_layers')(x, train)


class Attention(nn.Module):
  """Multi-head self-attention; `qkv` output features laid out [q | k | v], each [head0 | head1 | ...]."""

  num_heads: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    batch, n, dim = x.shape
    head_dim = dim // self.num_heads
    qkv = nn.Dense(3 * dim, name='qkv', dtype=self.dtype)(x).reshape(batch, n, 3, self.num_heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, H, D)
    logits = jnp.einsum('bnhd,bmhd->bhnm', q, k) * head_dim**-0.5
    attn = jax.nn.softmax(full_precision(logits), axis=-1).astype(v.dtype)
    out = jnp.einsum('bhnm,bmhd->bnhd', attn, v).reshape(batch, n, dim)
    return nn.Dense(dim, name='proj', dtype=self.dtype)(out)


class Mlp(nn.Module):
  hidden: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    h = jax.nn.gelu(nn.Dense(self.hidden, name='fc1', dtype=self.dtype)(x), approximate=False)
    return nn.Dense(x.shape[-1], name='fc2', dtype=self.dtype)(h)


class Block(nn.Module):
  """Pre-norm transformer block (LayerNorm eps 1e-6, no dropout): x + Attn(LN(x)), then x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: float
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    ln = lambda name: nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name=name, dtype=self.dtype)
    x = x + Attention(self.num_heads, name='attn', dtype=self.dtype)(ln('norm1')(x))
    return x + Mlp(int(x.shape[-1] * self.mlp_ratio), name='mlp', dtype=self.dtype)(ln('norm2')(x))


class InterHandTransformer(nn.Module):
  """The reference's `STE` over both hands' joints (docs/quirks.md#q5, docs/quirks.md#q6).

  Adds a learned position embedding, applies the blocks listed in `blocks` (the released code runs
  1..depth-1 and never block 0), each followed by the shared `spatial_norm` (LayerNorm eps 1e-6),
  then `head` = LayerNorm (eps 1e-5) and Linear to `out_features`.

  Input (B, 42, 128): left joints then right joints. Output (B, 42, out_features).
  """

  out_features: int = 64
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 2.0
  blocks: Sequence[int] = (1, 2, 3)
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    num_tokens, dim = x.shape[-2:]
    pos = self.param('spatial_pos_embed', nn.initializers.normal(0.02), (1, num_tokens, dim), jnp.float32)
    x = x + pos.astype(x.dtype)
    norm = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name='spatial_norm', dtype=self.dtype)
    x = _Blocks(self.depth, self.num_heads, self.mlp_ratio, tuple(self.blocks), name='STEblocks', dtype=self.dtype)(
        x, norm
    )
    return _Head(self.out_features, name='head', dtype=self.dtype)(x)


class _Blocks(nn.Module):
  """The `STEblocks` list: applies the listed blocks, each followed by the shared `norm`."""

  depth: int
  num_heads: int
  mlp_ratio: float
  blocks: tuple[int, ...]
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, norm):
    for i in self.blocks:
      if not 0 <= i < self.depth:
        raise ValueError(f'transformer block {i} outside 0..{self.depth - 1}')
      x = norm(Block(self.num_heads, self.mlp_ratio, name=str(i), dtype=self.dtype)(x))
    return x


class _Head(nn.Module):
  """Sequential[LayerNorm (eps 1e-5), Linear]."""

  out_features: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name='0', dtype=self.dtype)(x)
    return nn.Dense(self.out_features, name='1', dtype=self.dtype)(x)
