"""bench/flops.py counts as torch.utils.flop_counter does: multiply-add = 2, each conv gradient = its forward."""

import jax
import jax.numpy as jnp
from jax import lax

from bench.flops import count_flops, fusion_flops


def _conv(x, w, stride=1):
  return lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_dot_and_conv_forward():
  a, b = jnp.zeros((3, 4, 5)), jnp.zeros((3, 5, 6))
  assert count_flops(jax.make_jaxpr(lambda a, b: jnp.einsum('bij,bjk->bik', a, b))(a, b)) == 2 * 3 * 4 * 5 * 6
  x, w = jnp.zeros((2, 8, 8, 3)), jnp.zeros((3, 3, 3, 4))
  assert count_flops(jax.make_jaxpr(_conv)(x, w)) == 2 * 2 * 8 * 8 * 4 * 9 * 3
  assert count_flops(jax.make_jaxpr(lambda x, w: _conv(x, w, 2))(x, w)) == 2 * 2 * 4 * 4 * 4 * 9 * 3


def test_conv_gradients_cost_their_forward_also_when_strided():
  x, w = jnp.zeros((2, 8, 8, 3)), jnp.zeros((3, 3, 3, 4))
  for stride in (1, 2):
    forward = count_flops(jax.make_jaxpr(lambda x, w: _conv(x, w, stride))(x, w))
    both = count_flops(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(_conv(x, w, stride)), argnums=(0, 1)))(x, w))
    assert both == 3 * forward  # forward + input gradient + kernel gradient


def test_scan_body_counts_per_iteration():
  a = jnp.zeros((4, 4))
  body = lambda c, _: (c @ a, None)
  assert count_flops(jax.make_jaxpr(lambda c: jax.lax.scan(body, c, None, length=5)[0])(a)) == 5 * 2 * 4**3


def test_factored_fusion_has_20x_fewer_flops_at_released_sizes():
  dense = fusion_flops(32, 'dense') + fusion_flops(16, 'dense')
  factored = fusion_flops(32, 'factored') + fusion_flops(16, 'factored')
  # The dense 3x3 conv over 2560 channels: 2 * S^2 * 9 * 2560 * 256 at S = 16 and 32, plus the 1x1 conv.
  assert dense == sum(2 * s * s * (9 * 2560 * 256 + 256 * 256) for s in (16, 32))
  assert dense / factored >= 20
