"""Building blocks against PyTorch: sampling, resizing, attention, and converted conv/linear/BN layers.

Each test runs a JAX function or Flax module and its PyTorch counterpart on the same random input;
weights go from a torch state dict through `convert_state_dict` (the converter's own rules).

Tolerances (absolute, on values of order 1 unless scaled):
- SAMPLE_ATOL 1e-6: bilinear sampling/resizing mix at most 4 values with weights computed in float32
  by the same formula; only rounding (a few ulp) differs.
- LAYER_RTOL 1e-5 of the output's max |value|: convolutions and matmuls sum up to a few hundred
  float32 products in a different order (XLA vs ATen); that leaves ~1e-6 relative. A wrong layout or
  transposed kernel gives errors of order 1.
- STATS_ATOL 1e-6: BN running statistics are means of the batch; same order of rounding.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dir_jax.convert.torch_checkpoint import ConversionError, convert_state_dict
from dir_jax.model.encoder import Bottleneck
from dir_jax.model.joint_space import Attention, InterHandTransformer
from dir_jax.model.layers import BatchNorm, ConvBNReLUConv, Residual, conv, grid_sample_point, sample_joints, upsample_bilinear

SAMPLE_ATOL = 1e-6
LAYER_RTOL = 1e-5
STATS_ATOL = 1e-6


def _rng(seed):
  return np.random.default_rng(seed)


def _numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
  """Copies (torch updates BN buffers in place; the converter may keep float32 arrays as they are)."""
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _convert(torch_module: torch.nn.Module, flax_module: nn.Module, *example, **kwargs):
  """Flax variables for `flax_module` filled from `torch_module`'s state dict by the converter."""
  template = jax.eval_shape(lambda *a: flax_module.init(jax.random.PRNGKey(0), *a, **kwargs), *example)
  variables, report = convert_state_dict(_numpy_state(torch_module), template, stages=())
  assert report.missing == []
  return variables


def _assert_close(ours, ref, rtol=LAYER_RTOL):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape
  np.testing.assert_allclose(ours, ref, rtol=0, atol=rtol * float(np.max(np.abs(ref))))


def _holder(**children) -> torch.nn.Module:
  """A torch module with the given children, so state-dict keys carry their names as prefixes."""
  holder = torch.nn.Module()
  for name, child in children.items():
    holder.add_module(name, child)
  return holder


def _randomize_bn(bn, rng):
  """Non-trivial affine parameters and running statistics, so eval mode tests all four."""
  c = bn.num_features
  with torch.no_grad():
    bn.weight.copy_(torch.from_numpy(rng.normal(1, 0.2, c).astype(np.float32)))
    bn.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, c).astype(np.float32)))
    bn.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.5, c).astype(np.float32)))
    bn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, c).astype(np.float32)))


def _randomize_all_bn(module: torch.nn.Module, rng):
  for m in module.modules():
    if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
      _randomize_bn(m, rng)


# ------------------------------------------------------------------------------------------------
# Joint sampling: F.grid_sample(bilinear, zeros, align_corners=False), as DIR's img2joint
# (docs/quirks.md#q10).


def _sample_points(rng, h, w):
  """Random points inside and outside [-1, 1], exact borders, pixel centres and points beyond 1 px out."""
  rand = rng.uniform(-1.3, 1.3, (24, 2))
  borders = np.array([[-1, -1], [1, 1], [-1, 1], [1, -1], [0, -1], [1, 0], [-1, 0.3], [0.2, 1]])
  # Pixel centres (c + 0.5) / n * 2 - 1 of the first/last column and row: exactly one tap.
  centres = np.array([[1 / w - 1, 1 / h - 1], [1 - 1 / w, 1 - 1 / h], [1 / w - 1, 0.1], [0.3, 1 - 1 / h]])
  # Half a pixel beyond the border: every tap outside; and far away.
  outside = np.array([[-1 - 1 / w, 0.0], [0.0, 1 + 1 / h], [-1 - 1.5 / w, -1 - 1.5 / h], [3.0, -2.5]])
  return np.concatenate([rand, borders, centres, outside]).astype(np.float32)


def test_sample_joints_matches_grid_sample():
  rng = _rng(0)
  b, c, h, w = 2, 5, 7, 9  # odd, non-square: catches swapped x/y and H/W
  maps = rng.normal(size=(b, c, h, w)).astype(np.float32)
  uv = np.stack([_sample_points(rng, h, w), _sample_points(rng, h, w)[::-1]])  # (B, J, 2)
  ref = F.grid_sample(
      torch.from_numpy(maps), torch.from_numpy(uv)[:, None], mode='bilinear', padding_mode='zeros', align_corners=False
  )  # (B, C, 1, J)
  ours = jax.jit(sample_joints)(maps.transpose(0, 2, 3, 1), uv)  # (B, J, C)
  np.testing.assert_allclose(np.asarray(ours), ref[:, :, 0].numpy().transpose(0, 2, 1), rtol=0, atol=SAMPLE_ATOL)
  # The last four points (first four of the reversed second row) have every tap outside: exact zeros.
  assert np.all(np.asarray(ours)[0, -4:] == 0) and np.all(np.asarray(ours)[1, :4] == 0)


def test_grid_sample_point_gradient_wrt_features():
  """Image features are not detached before sampling: the backward pass must match too.

  docs/architecture.md#gradient-paths.
  """
  rng = _rng(1)
  c, h, w = 3, 6, 5
  fmap = rng.normal(size=(c, h, w)).astype(np.float32)
  uv = _sample_points(rng, h, w)
  weights = rng.normal(size=(len(uv), c)).astype(np.float32)
  fmap_t = torch.from_numpy(fmap).requires_grad_()
  sampled = F.grid_sample(fmap_t[None], torch.from_numpy(uv)[None, None], align_corners=False)[0, :, 0].T
  (sampled * torch.from_numpy(weights)).sum().backward()
  loss = lambda f: jnp.sum(jax.vmap(grid_sample_point, in_axes=(None, 0))(f, uv) * weights)
  grad = jax.grad(loss)(fmap.transpose(1, 2, 0))
  np.testing.assert_allclose(np.asarray(grad), fmap_t.grad.numpy().transpose(1, 2, 0), rtol=0, atol=SAMPLE_ATOL)


# ------------------------------------------------------------------------------------------------
# Bilinear upsampling: nn.Upsample(scale_factor, mode='bilinear') = align_corners=False
# (docs/quirks.md#q11).


@pytest.mark.parametrize(
    'h, w, factor, atol',
    [
        (8, 8, 2, SAMPLE_ATOL),
        (7, 5, 2, SAMPLE_ATOL),
        (1, 3, 2, SAMPLE_ATOL),
        # With factor 3 the source coordinate (dst + 0.5) / 3 - 0.5 is inexact; torch rounds it in float32
        # arithmetic, we in float64 and cast: weights differ by an ulp of the coordinate (~5e-7 here) times
        # neighbour differences of up to ~4. DIR only upsamples by 2, where the coordinates are exact.
        (5, 4, 3, 5e-6),
    ],
)
def test_upsample_bilinear_matches_torch(h, w, factor, atol):
  x = _rng(h * w).normal(size=(2, 3, h, w)).astype(np.float32)
  ref = torch.nn.Upsample(scale_factor=factor, mode='bilinear')(torch.from_numpy(x)).numpy()
  ours = upsample_bilinear(jnp.asarray(x.transpose(0, 2, 3, 1)), factor)
  np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), ref, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------
# Attention and the inter-hand transformer, written here in torch from their description
# (docs/architecture.md#joint-space, docs/quirks.md#q5, docs/quirks.md#q6).


class TorchAttention(torch.nn.Module):
  """qkv features laid out [q | k | v], each [head0 | head1 | ...]; torch's own SDPA does the rest."""

  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = torch.nn.Linear(dim, 3 * dim)
    self.proj = torch.nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, no mask
    return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TorchBlock(torch.nn.Module):

  def __init__(self, dim, heads, mlp_ratio):
    super().__init__()
    self.norm1 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.attn = TorchAttention(dim, heads)
    self.norm2 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.mlp = torch.nn.Module()
    self.mlp.fc1 = torch.nn.Linear(dim, int(dim * mlp_ratio))
    self.mlp.fc2 = torch.nn.Linear(int(dim * mlp_ratio), dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class TorchSTE(torch.nn.Module):
  """The reference's STE: blocks 1..depth-1 only, shared norm after each.

  docs/quirks.md#q5, docs/quirks.md#q6.
  """

  def __init__(self, tokens=42, dim=128, out=64, depth=4, heads=4, mlp_ratio=2.0):
    super().__init__()
    self.spatial_pos_embed = torch.nn.Parameter(0.02 * torch.randn(1, tokens, dim))
    self.STEblocks = torch.nn.ModuleList([TorchBlock(dim, heads, mlp_ratio) for _ in range(depth)])
    self.spatial_norm = torch.nn.LayerNorm(dim, eps=1e-6)
    self.head = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, out))

  def forward(self, x):
    x = x + self.spatial_pos_embed
    for block in self.STEblocks[1:]:
      x = self.spatial_norm(block(x))
    return self.head(x)


def _randomize_layer_norms(module, rng):
  for m in module.modules():
    if isinstance(m, torch.nn.LayerNorm):
      with torch.no_grad():
        m.weight.copy_(torch.from_numpy(rng.normal(1, 0.2, m.weight.shape).astype(np.float32)))
        m.bias.copy_(torch.from_numpy(rng.normal(0, 0.2, m.bias.shape).astype(np.float32)))


def test_attention_matches_torch_sdpa():
  torch.manual_seed(0)
  ref_module = TorchAttention(128, 4)
  x = _rng(2).normal(size=(2, 42, 128)).astype(np.float32)
  variables = _convert(ref_module, Attention(num_heads=4), x)
  ours = Attention(num_heads=4).apply(variables, x)
  _assert_close(ours, ref_module(torch.from_numpy(x)).detach().numpy())


class _Interaction(nn.Module):

  @nn.compact
  def __call__(self, x):
    return InterHandTransformer(name='interaction')(x)


class _Projecter(nn.Module):
  """The transformer under its reference names, `projecter.interaction.*` (the converter's pattern for
  the unused block 0 is `.interaction.STEblocks.0.`)."""

  @nn.compact
  def __call__(self, x):
    return _Interaction(name='projecter')(x)


def test_inter_hand_transformer_matches_torch():
  torch.manual_seed(1)
  ref_module = TorchSTE()
  _randomize_layer_norms(ref_module, _rng(3))
  x = _rng(4).normal(size=(2, 42, 128)).astype(np.float32)
  state = _numpy_state(_holder(projecter=_holder(interaction=ref_module)))
  template = jax.eval_shape(lambda a: _Projecter().init(jax.random.PRNGKey(0), a), x)
  variables, report = convert_state_dict(state, template, stages=())
  # Block 0 is built but never run (docs/quirks.md#q5): its 12 entries are reported unused, not loaded.
  assert len(report.unused) == 12 and all(k.startswith('projecter.interaction.STEblocks.0.') for k in report.unused)
  ours = jax.jit(_Projecter().apply)(variables, x)
  _assert_close(ours, ref_module(torch.from_numpy(x)).detach().numpy())


# ------------------------------------------------------------------------------------------------
# Converted layers: torch module -> state dict -> convert_state_dict -> Flax module, same outputs.


@pytest.mark.parametrize(
    'kernel, stride, padding, bias',
    [
        (3, 1, 1, True),  # Residual conv2, heads
        (1, 1, 0, True),  # 1x1 with bias
        (3, 2, 1, False),  # ResNet v1.5 strided 3x3
        (1, 2, 0, False),  # ResNet downsample
        (7, 2, 3, False),  # ResNet stem
    ],
)
def test_conv2d_round_trip(kernel, stride, padding, bias):
  torch.manual_seed(kernel + stride)
  ref_module = torch.nn.Conv2d(6, 8, kernel, stride, padding, bias=bias)
  if bias:
    torch.nn.init.normal_(ref_module.bias)
  x = _rng(5).normal(size=(2, 6, 13, 10)).astype(np.float32)  # odd and even sizes under stride 2
  ours_module = conv(8, kernel, stride, padding, bias=bias)
  variables = _convert(ref_module, ours_module, x.transpose(0, 2, 3, 1))
  ours = ours_module.apply(variables, x.transpose(0, 2, 3, 1))
  _assert_close(np.asarray(ours).transpose(0, 3, 1, 2), ref_module(torch.from_numpy(x)).detach().numpy())


def test_linear_round_trip():
  torch.manual_seed(2)
  ref_module = torch.nn.Linear(24, 7)
  x = _rng(6).normal(size=(3, 24)).astype(np.float32)
  variables = _convert(ref_module, nn.Dense(7), x)
  _assert_close(nn.Dense(7).apply(variables, x), ref_module(torch.from_numpy(x)).detach().numpy())


def test_conv1d_kernel1_round_trip():
  """Conv1d k=1 over (B, C, L) is a Dense over (B, L, C)."""
  torch.manual_seed(3)
  ref_module = torch.nn.Conv1d(5, 7, 1)
  x = _rng(7).normal(size=(2, 5, 21)).astype(np.float32)
  variables = _convert(ref_module, nn.Dense(7), x.transpose(0, 2, 1))
  ours = nn.Dense(7).apply(variables, x.transpose(0, 2, 1))
  _assert_close(np.asarray(ours).transpose(0, 2, 1), ref_module(torch.from_numpy(x)).detach().numpy())


def test_conv1d_wider_kernel_is_refused():
  state = _numpy_state(torch.nn.Conv1d(5, 7, 3))
  template = jax.eval_shape(lambda a: nn.Dense(7).init(jax.random.PRNGKey(0), a), np.zeros((1, 21, 5), np.float32))
  with pytest.raises(ConversionError, match='Conv1d with kernel 3'):
    convert_state_dict(state, template, stages=())


class _BN(nn.Module):
  """BatchNorm named `bn` (a prefixed key, as every BN in DIR has; the converter ignores `.num_batches_tracked`)."""

  @nn.compact
  def __call__(self, x, train):
    return BatchNorm(name='bn')(x, train)


@pytest.mark.parametrize('dims', [1, 2])
def test_batchnorm_eval_uses_running_stats(dims):
  bn = torch.nn.BatchNorm1d(6) if dims == 1 else torch.nn.BatchNorm2d(6)
  _randomize_bn(bn, _rng(8))
  bn.eval()
  x = _rng(9).normal(1, 2, size=(3, 6, 21) if dims == 1 else (3, 6, 5, 4)).astype(np.float32)
  x_last = np.moveaxis(x, 1, -1)
  variables = _convert(_holder(bn=bn), _BN(), x_last, train=False)
  ours = _BN().apply(variables, x_last, train=False)
  _assert_close(np.moveaxis(np.asarray(ours), -1, 1), bn(torch.from_numpy(x)).detach().numpy())


@pytest.mark.parametrize('dims', [1, 2])
def test_batchnorm_train_uses_batch_stats_and_updates_running_stats(dims):
  """Normalises with the biased batch variance; running_var takes the unbiased one, momentum 0.1."""
  bn = torch.nn.BatchNorm1d(6) if dims == 1 else torch.nn.BatchNorm2d(6)
  _randomize_bn(bn, _rng(10))
  x = _rng(11).normal(3, 2, size=(2, 6, 21) if dims == 1 else (2, 6, 3, 3)).astype(np.float32)
  x_last = np.moveaxis(x, 1, -1)
  variables = _convert(_holder(bn=bn), _BN(), x_last, train=False)
  bn.train()
  ref = bn(torch.from_numpy(x)).detach().numpy()
  ours, updated = _BN().apply(variables, x_last, train=True, mutable=['batch_stats'])
  _assert_close(np.moveaxis(np.asarray(ours), -1, 1), ref)
  np.testing.assert_allclose(updated['batch_stats']['bn']['mean'], bn.running_mean.numpy(), rtol=0, atol=STATS_ATOL)
  np.testing.assert_allclose(updated['batch_stats']['bn']['var'], bn.running_var.numpy(), rtol=0, atol=STATS_ATOL)
  # The test can tell: a running variance updated with the biased batch variance is far off.
  biased = 0.9 * np.asarray(variables['batch_stats']['bn']['var']) + 0.1 * np.var(x_last.reshape(-1, 6), 0)
  assert np.max(np.abs(biased - bn.running_var.numpy())) > 100 * STATS_ATOL


@pytest.mark.parametrize('first_bias', [True, False])
def test_conv_bn_relu_conv_round_trip(first_bias):
  """The reference's Sequential heads (seg, dense, conv_final: children '0', '1', '3')."""
  torch.manual_seed(4)
  ref_module = torch.nn.Sequential(
      torch.nn.Conv2d(6, 8, 3, 1, 1, bias=first_bias),
      torch.nn.BatchNorm2d(8),
      torch.nn.ReLU(),
      torch.nn.Conv2d(8, 3, 1),
  )
  _randomize_all_bn(ref_module, _rng(12))
  ref_module.eval()
  x = _rng(13).normal(size=(2, 6, 9, 9)).astype(np.float32)
  ours_module = ConvBNReLUConv(8, 3, kernel=3, first_bias=first_bias)
  variables = _convert(ref_module, ours_module, x.transpose(0, 2, 3, 1), train=False)
  ours = ours_module.apply(variables, x.transpose(0, 2, 3, 1), train=False)
  _assert_close(np.asarray(ours).transpose(0, 3, 1, 2), ref_module(torch.from_numpy(x)).detach().numpy())


class TorchResidual(torch.nn.Module):
  """Pre-activation bottleneck with the reference's names (`convK.conv`, `skip_layer.conv`); docs/quirks.md#q23."""

  def __init__(self, cin, cout):
    super().__init__()
    mid = cout // 2
    self.bn1, self.conv1 = torch.nn.BatchNorm2d(cin), _holder(conv=torch.nn.Conv2d(cin, mid, 1))
    self.bn2, self.conv2 = torch.nn.BatchNorm2d(mid), _holder(conv=torch.nn.Conv2d(mid, mid, 3, 1, 1))
    self.bn3, self.conv3 = torch.nn.BatchNorm2d(mid), _holder(conv=torch.nn.Conv2d(mid, cout, 1))
    self.skip_layer = _holder(conv=torch.nn.Conv2d(cin, cout, 1))

  def forward(self, x):
    h = self.conv1.conv(F.relu(self.bn1(x)))
    h = self.conv2.conv(F.relu(self.bn2(h)))
    h = self.conv3.conv(F.relu(self.bn3(h)))
    return h + self.skip_layer.conv(x)


class TorchBottleneck(torch.nn.Module):
  """torchvision's ResNet v1.5 bottleneck (stride in the 3x3 conv) with a downsample branch."""

  def __init__(self, cin, width, stride):
    super().__init__()
    self.conv1, self.bn1 = torch.nn.Conv2d(cin, width, 1, bias=False), torch.nn.BatchNorm2d(width)
    self.conv2, self.bn2 = torch.nn.Conv2d(width, width, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(width)
    self.conv3, self.bn3 = torch.nn.Conv2d(width, 4 * width, 1, bias=False), torch.nn.BatchNorm2d(4 * width)
    self.downsample = torch.nn.Sequential(
        torch.nn.Conv2d(cin, 4 * width, 1, stride, bias=False), torch.nn.BatchNorm2d(4 * width)
    )

  def forward(self, x):
    h = F.relu(self.bn1(self.conv1(x)))
    h = F.relu(self.bn2(self.conv2(h)))
    return F.relu(self.bn3(self.conv3(h)) + self.downsample(x))


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('which', ['residual', 'bottleneck'])
def test_blocks_round_trip(which, train):
  torch.manual_seed(5)
  if which == 'residual':
    ref_module, ours_module = TorchResidual(12, 8), Residual(8)
  else:
    ref_module, ours_module = TorchBottleneck(12, 4, 2), Bottleneck(4, 2, downsample=True)
  _randomize_all_bn(ref_module, _rng(14))
  x = _rng(15).normal(size=(2, 12, 9, 8)).astype(np.float32)
  x_last = x.transpose(0, 2, 3, 1)
  variables = _convert(ref_module.eval(), ours_module, x_last, train=False)
  ref = ref_module.train(train)(torch.from_numpy(x)).detach().numpy()
  ours, _ = ours_module.apply(variables, x_last, train=train, mutable=['batch_stats'])
  _assert_close(np.asarray(ours).transpose(0, 3, 1, 2), ref)
