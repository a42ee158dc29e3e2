"""The CPU loop-conv workaround: the native forward, gradients equal to the native ones, and taken by
exactly the convs of the decoder's scanned stages."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import tiny
from dir_jax.model import loop_conv
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.dir import DIR, placeholder_mano
from dir_jax.model.layers import conv
from dir_jax.model.loop_conv import loop_conv_general_dilated


def _native(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _loop(x, w, padding):
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  return loop_conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=dn)


def _scanned(conv_fn, padding):
  """The conv as the body of a 2-step scan (what the refinement stages do), summed with weights."""

  def loss(x, w, dy):
    def body(h, _):
      return h, jnp.sum(conv_fn(h, w, padding) * dy)

    return lax.scan(body, x, None, length=2)[1].sum()

  return loss


@pytest.mark.parametrize('kernel, padding', [(3, ((1, 1), (1, 1))), (1, ((0, 0), (0, 0))), (3, ((2, 0), (0, 1)))])
def test_loop_conv_matches_native(kernel, padding):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (3, 7, 6, 5))
  w = jax.random.normal(keys[1], (kernel, kernel, 5, 4))
  out_shape = jax.eval_shape(lambda: _native(x, w, padding)).shape
  dy = jax.random.normal(keys[2], out_shape)
  np.testing.assert_array_equal(
      jax.jit(_loop, static_argnums=2)(x, w, padding), jax.jit(_native, static_argnums=2)(x, w, padding)
  )
  grads_loop = jax.jit(jax.grad(_scanned(_loop, padding), (0, 1)))(x, w, dy)
  grads_native = jax.jit(jax.grad(_scanned(_native, padding), (0, 1)))(x, w, dy)
  for got, want in zip(grads_loop, grads_native):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_flax_conv_in_loop_body_same_parameters_and_output():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 3))
  plain = conv(4, 3, padding=1)
  with loop_conv.loop_body():
    looped = conv(4, 3, padding=1)
  assert plain.conv_general_dilated is None and looped.conv_general_dilated is loop_conv_general_dilated
  assert conv(4, 3).conv_general_dilated is None  # the context is closed again
  variables = plain.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(looped.apply(variables, x), plain.apply(variables, x))


def test_loop_conv_refuses_strided():
  x, w = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
  dn = lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  with pytest.raises(ValueError, match='stride-1'):
    loop_conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
  with pytest.raises(ValueError, match='stride-1'):
    nn.Conv(2, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), conv_general_dilated=loop_conv_general_dilated).init(
        jax.random.PRNGKey(0), x
    )


def test_only_the_scanned_stages_take_the_loop_conv():
  """Group 0 (not a scan) and the encoder keep XLA's conv; every conv of a scanned group takes ours."""
  narrow = {
      k: tiny.get_config().model[k] for k in ('encoder_width', 'attention_dim', 'img_feat_dim', 'emb_dim', 'joint_dim')
  }
  model = DIR(
      ModelConfig(
          stages=(StageSpec(4, 'c3', 1.0), StageSpec(8, 'c2', 2.0), StageSpec(8, 'c2', 2.0)), fusion='dense', **narrow
      )
  )
  takes_loop_conv = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv) and context.method_name == '__call__':
      takes_loop_conv['/'.join(context.module.path)] = context.module.conv_general_dilated is loop_conv_general_dilated
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), placeholder_mano()))
  scanned = {path for path in takes_loop_conv if path.startswith('decoder/group_1/')}
  assert 'decoder/group_1/projecter/fusion/0' in scanned and 'decoder/group_1/skip_layer/conv1/conv' in scanned
  assert all(takes_loop_conv[path] for path in scanned)
  assert not any(takes_loop_conv[path] for path in set(takes_loop_conv) - scanned)
  assert any(path.startswith('decoder/group_0/') for path in takes_loop_conv)
