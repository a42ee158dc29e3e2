"""The CPU workaround for convolutions inside the decoder's scanned stages, in one place.

XLA:CPU runs the gradient convolutions of a conv inside a while loop (what `nn.scan` lowers to)
without its fast kernels, 50-96x slower than outside (jax-ml/jax#12868; `bench/loop_conv.py`).
The decoder builds its scanned stage groups inside `loop_body()`; every `layers.conv` created there
takes `loop_conv_general_dilated`, whose forward is XLA's and whose gradients are, on CPU,
`_canonical_conv_grads` (a canonical-layout forward conv and per-tap matrix products). On GPU and
TPU the native gradients run (`lax.platform_dependent`), so nothing changes there. The stage modules
themselves know nothing of loops.
"""

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')
_IN_LOOP_BODY = contextvars.ContextVar('dir_jax_convs_in_loop_body', default=False)


@contextlib.contextmanager
def loop_body():
  """Convs created by `layers.conv` while this context is open run inside a loop body."""
  token = _IN_LOOP_BODY.set(True)
  try:
    yield
  finally:
    _IN_LOOP_BODY.reset(token)


def conv_general_dilated_here():
  """The conv function for a conv created now: `loop_conv_general_dilated` inside `loop_body()`, else
  None (flax's default, `lax.conv_general_dilated`)."""
  return loop_conv_general_dilated if _IN_LOOP_BODY.get() else None


def _conv_nhwc(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)


def _canonical_conv_grads(padding, x, w, dy):
  """Gradients of a stride-1 NHWC conv from ops XLA:CPU runs fast inside a loop body.

  dx: dy convolved (canonical NHWC/HWIO forward conv) with the spatially flipped, in/out-swapped
  kernel. dw: one (C, O) matrix product per kernel tap, shifted input window by dy, over all pixels.
  """
  kh, kw = w.shape[:2]
  (top, bottom), (left, right) = padding
  dx = _conv_nhwc(
      dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
  )
  x_padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  height, width = dy.shape[1:3]
  dy_rows = dy.reshape(-1, dy.shape[-1])
  taps = [
      lax.dot_general(
          x_padded[:, i : i + height, j : j + width].reshape(-1, x.shape[-1]), dy_rows, (((0,), (0,)), ((), ()))
      )
      for i in range(kh)
      for j in range(kw)
  ]
  return dx, jnp.stack(taps).reshape(w.shape).astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _loop_conv(x, w, padding):
  return _conv_nhwc(x, w, padding)


def _loop_conv_fwd(x, w, padding):
  return _conv_nhwc(x, w, padding), (x, w)


def _loop_conv_bwd(padding, residuals, dy):
  x, w = residuals

  def native(x, w, dy):  # XLA's own gradient convs (the transposes of the conv in each argument)
    (dx,) = jax.linear_transpose(lambda a: _conv_nhwc(a, w, padding), x)(dy)
    (dw,) = jax.linear_transpose(lambda b: _conv_nhwc(x, b, padding), w)(dy)
    return dx, dw

  return lax.platform_dependent(x, w, dy, cpu=functools.partial(_canonical_conv_grads, padding), default=native)


_loop_conv.defvjp(_loop_conv_fwd, _loop_conv_bwd)


def loop_conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
):
  """`lax.conv_general_dilated` for stride-1 NHWC convs inside a loop body (`nn.scan`), same forward.

  On CPU its gradients are `_canonical_conv_grads`; other backends use the native gradient (module
  docstring).
  """
  del precision
  expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  if (
      tuple(window_strides) != (1, 1)
      or any(d not in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
      or feature_group_count != 1
      or dimension_numbers != expected
      or isinstance(padding, str)
  ):
    raise ValueError(
        'loop_conv_general_dilated supports stride-1, undilated, ungrouped NHWC convs with explicit padding'
    )
  return _loop_conv(lhs, rhs, tuple(tuple(p) for p in padding))
