"""Building blocks shared by the DIR modules, matching PyTorch's arithmetic in NHWC layout.

Module and parameter names mirror the reference's state-dict names (a Sequential's children are named
'0', '1', '3', ...), so that `dir_jax.convert` maps a checkpoint with one set of rules.
"""

import contextlib
import contextvars
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dir_jax.model import loop_conv


def full_precision(x):
  """`x` in float32, or float64 when it already is (bfloat16 compute keeps statistics and geometry in float32)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# Rows per group of training-mode BatchNorm statistics; 0: the whole batch (`batch_stat_groups`).
_STATS_GROUP_ROWS = contextvars.ContextVar('batch_norm_stats_group_rows', default=0)


@contextlib.contextmanager
def batch_stat_groups(rows: int):
  """Inside, training-mode `BatchNorm` takes its statistics over groups of `rows` consecutive rows of
  the batch (0: the whole batch, the default and the reference's behaviour).

  With the batch sharded over devices and `rows` dividing each device's share, every group lies on one
  device: the statistics need no all-reduce across devices (as per-replica BatchNorm in data-parallel
  training without synchronised BatchNorm). Each group is normalised with its own statistics; the
  running statistics are updated with the groups' mean. Read when the model is traced, like
  `loop_conv.loop_body`.
  """
  if rows < 0:
    raise ValueError(f'BatchNorm statistics group rows must be >= 0 (0: the whole batch), got {rows}')
  token = _STATS_GROUP_ROWS.set(rows)
  try:
    yield
  finally:
    _STATS_GROUP_ROWS.reset(token)


class BatchNorm(nn.Module):
  """BatchNorm over every axis but the last, as torch.nn.BatchNorm{1,2}d (eps 1e-5, momentum 0.1).

  Batch statistics use the two-pass (biased) variance for normalisation and update the running
  variance with the unbiased one, as PyTorch does. Variables: params `scale`, `bias`; batch_stats
  `mean`, `var` (Flax's names).

  `slots`: named running-statistics slots for a module called on several populations (the two hands
  of docs/quirks.md#q15). With slots, batch_stats are `mean_<slot>`, `var_<slot>` for each slot (no
  `mean`, `var`); each call names its `slot`, updates only that slot in training and normalises with
  it in eval mode. Training-mode outputs do not depend on the running statistics, so they and their
  gradients are the same with or without slots.

  Inside `batch_stat_groups(rows)` training-mode statistics are per group of `rows` rows (its docstring).
  """

  epsilon: float = 1e-5
  momentum: float = 0.9  # Flax convention: running = momentum * running + (1 - momentum) * batch
  slots: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x, train: bool, slot: str | None = None):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    if self.slots:
      if slot not in self.slots:
        raise ValueError(f'BatchNorm {self.name}: slot must be one of {self.slots}, got {slot!r}')
    elif slot is not None:
      raise ValueError(f'BatchNorm {self.name}: slot {slot!r} given to a BatchNorm without slots')
    suffixes = [f'_{s}' for s in self.slots] or ['']
    stats = {
        suffix: (
            self.variable('batch_stats', f'mean{suffix}', lambda: jnp.zeros((features,), jnp.float32)),
            self.variable('batch_stats', f'var{suffix}', lambda: jnp.ones((features,), jnp.float32)),
        )
        for suffix in suffixes
    }
    ra_mean, ra_var = stats[f'_{slot}' if self.slots else '']
    if not train:
      mean, var = ra_mean.value, ra_var.value
      y = (x - mean.astype(x.dtype)) * (scale * jax.lax.rsqrt(var + self.epsilon)).astype(x.dtype)
      return y + bias.astype(x.dtype)
    rows = _STATS_GROUP_ROWS.get() or x.shape[0]
    if x.shape[0] % rows:
      raise ValueError(f'BatchNorm {self.name}: a batch of {x.shape[0]} rows does not split into groups of {rows}')
    groups = x.reshape((x.shape[0] // rows, rows) + x.shape[1:])  # (G, rows, ..., C)
    axes = tuple(range(1, groups.ndim - 1))
    x32 = full_precision(groups)
    mean = jnp.mean(x32, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
    if not self.is_initializing():
      n = int(np.prod([groups.shape[a] for a in axes]))
      batch_mean, batch_var = jnp.mean(mean, axis=(0,) + axes), jnp.mean(var, axis=(0,) + axes)
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * batch_mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * batch_var * (n / max(n - 1, 1))
    y = (groups - mean.astype(x.dtype)) * (scale * jax.lax.rsqrt(var + self.epsilon)).astype(x.dtype)
    return (y + bias.astype(x.dtype)).reshape(x.shape)


def conv(
    features: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True, name=None, dtype=None
) -> nn.Conv:
  """A torch.nn.Conv2d equivalent (symmetric explicit padding) in NHWC.

  Inside `loop_conv.loop_body()` (the decoder's scanned stages) the conv takes
  `loop_conv.loop_conv_general_dilated`: the same forward, fast gradients on CPU.
  """
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      use_bias=bias,
      name=name,
      dtype=dtype,
      conv_general_dilated=loop_conv.conv_general_dilated_here(),
  )


class ConvBNReLUConv(nn.Module):
  """Sequential[conv k, BN, ReLU, conv 1x1] with children '0', '1', '3' (the reference's heads).

  `kernel=0` means Conv1d with kernel 1 over a (B, L, C) sequence, i.e. a Dense per position.
  `bn_slots`: running-statistics slots of the BatchNorm; each call then names its `slot` (see `BatchNorm`).
  """

  hidden: int
  out: int
  kernel: int = 0
  first_bias: bool = True
  dtype: jnp.dtype | None = None
  bn_slots: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x, train: bool, slot: str | None = None):
    if self.kernel == 0:
      x = nn.Dense(self.hidden, name='0', dtype=self.dtype)(x)
    else:
      x = conv(self.hidden, self.kernel, padding=self.kernel // 2, bias=self.first_bias, name='0', dtype=self.dtype)(x)
    x = nn.relu(BatchNorm(slots=self.bn_slots, name='1')(x, train, slot))
    if self.kernel == 0:
      return nn.Dense(self.out, name='3', dtype=self.dtype)(x)
    return conv(self.out, 1, name='3', dtype=self.dtype)(x)


class _BiasConv(nn.Module):
  """The reference's `Conv` wrapper with bn=False, relu=False: a bare biased conv named `conv`."""

  features: int
  kernel: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    return conv(self.features, self.kernel, padding=(self.kernel - 1) // 2, name='conv', dtype=self.dtype)(x)


class Residual(nn.Module):
  """Pre-activation bottleneck of the reference's hourglass (docs/quirks.md#q23).

  x -> BN-ReLU-conv1x1 -> BN-ReLU-conv3x3 -> BN-ReLU-conv1x1, plus `skip_layer` (1x1 conv with bias),
  mid = out // 2. Input (B, H, W, in) -> (B, H, W, out).
  """

  out: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    mid = self.out // 2
    bias_conv = functools.partial(_BiasConv, dtype=self.dtype)
    skip = bias_conv(self.out, 1, name='skip_layer')(x)
    h = bias_conv(mid, 1, name='conv1')(nn.relu(BatchNorm(name='bn1')(x, train)))
    h = bias_conv(mid, 3, name='conv2')(nn.relu(BatchNorm(name='bn2')(h, train)))
    h = bias_conv(self.out, 1, name='conv3')(nn.relu(BatchNorm(name='bn3')(h, train)))
    return h + skip


def upsample_bilinear(x, factor: int = 2):
  """nn.Upsample(scale_factor, mode='bilinear') (half-pixel centres, edge clamp), NHWC.

  Args:
    x: (B, H, W, C).

  Returns:
    (B, H*factor, W*factor, C): `jax.image.resize` 'linear' without antialiasing, which is PyTorch's
    rule (at the edges its normalised weights equal PyTorch's clamp to the border pixel).
  """
  chex.assert_rank(x, 4)
  batch, h, w, channels = x.shape
  return jax.image.resize(x, (batch, h * factor, w * factor, channels), 'linear', antialias=False)


def grid_sample_point(feature_map, uv):
  """Bilinear sample of one map at one point, as F.grid_sample(align_corners=False, zero padding).

  Args:
    feature_map: (H, W, C).
    uv: (2,) normalised (u, v) = (x, y); -1 is the outer edge of the first pixel.

  Returns:
    (C,) features; taps outside the map read zeros.
  """
  h, w, _ = feature_map.shape
  ix = ((uv[0] + 1) * w - 1) / 2
  iy = ((uv[1] + 1) * h - 1) / 2
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  x1, y1 = x0 + 1, y0 + 1

  def tap(xi, yi, weight):
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    value = feature_map[jnp.clip(yi, 0, h - 1).astype(jnp.int32), jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
    return jnp.where(inside, weight, 0).astype(feature_map.dtype) * value

  return (
      tap(x0, y0, (x1 - ix) * (y1 - iy))
      + tap(x1, y0, (ix - x0) * (y1 - iy))
      + tap(x0, y1, (x1 - ix) * (iy - y0))
      + tap(x1, y1, (ix - x0) * (iy - y0))
  )


def sample_joints(feature_maps, joints_uv):
  """Samples (B, H, W, C) maps at (B, J, 2) uv points -> (B, J, C) (grid_sample per joint, vmapped)."""
  per_example = jax.vmap(grid_sample_point, in_axes=(None, 0))
  return jax.vmap(per_example)(feature_maps, joints_uv)
