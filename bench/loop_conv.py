"""Gradient of a conv inside an `nn.scan` body: XLA's native gradient against `loop_conv_general_dilated`.

The refinement stages run as `nn.scan`; XLA:CPU executes the gradient convolutions of a conv inside a
while loop without its fast kernels (jax-ml/jax#12868). For the refinement stages' convolution shapes
this prints, per shape, the time of d(loss)/d(input, kernel) through a one-step scan with the native
conv and with `dir_jax.model.loop_conv.loop_conv_general_dilated`, the same outside any loop as a
reference, and the ratio native / ours measured in the same run. (The 32x32 stage's fusion conv is
left out: natively in a loop it takes minutes per call on 2 cores.)

  .venv/bin/python bench/loop_conv.py [--batch 4] [--repeats 2]
"""

import time
from typing import Sequence

import jax
import jax.numpy as jnp
from absl import flags
from jax import lax

from dir_jax import cli
from dir_jax.model.loop_conv import loop_conv_general_dilated

NHWC = ('NHWC', 'HWIO', 'NHWC')
# (name, grid side, input channels, output channels, kernel) of the released configuration's stage convs.
SHAPES = (
    ('fusion 3x3, 16x16 stage', 16, 2 * 20 * 64, 256, 3),
    ('Residual conv2 3x3, 32x32', 32, 128, 128, 3),
    ('Residual skip 1x1, 32x32', 32, 512, 256, 1),
)


def native_conv(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)


def loop_conv(x, w, padding):
  return loop_conv_general_dilated(
      x, w, (1, 1), padding, dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
  )


def gradient_fn(conv_fn, padding, in_scan: bool):
  """jit(d sum(conv(x, w) * dy) / d(x, w)), the conv in the body of a one-step scan or not."""

  def loss(x, w, dy):
    if not in_scan:
      return jnp.sum(conv_fn(x, w, padding) * dy)
    return lax.scan(lambda h, _: (h, jnp.sum(conv_fn(h, w, padding) * dy)), x, None, length=1)[1].sum()

  return jax.jit(jax.grad(loss, (0, 1)))


def best_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_integer('batch', 4, 'batch size', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 2, 'timed calls (best of)', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  print(f'backend {jax.default_backend()}; batch {FLAGS.batch}; best of {FLAGS.repeats}; milliseconds')
  print(f'{"conv":28s} {"no loop":>9s} {"scan native":>12s} {"scan ours":>10s} {"native/ours":>12s}')
  for name, size, c_in, c_out, kernel in SHAPES:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    pad = kernel // 2
    padding = ((pad, pad), (pad, pad))
    x = jax.random.normal(keys[0], (FLAGS.batch, size, size, c_in))
    w = jax.random.normal(keys[1], (kernel, kernel, c_in, c_out)) * 0.01
    dy = jax.random.normal(keys[2], (FLAGS.batch, size, size, c_out))
    times = [
        best_seconds(gradient_fn(conv_fn, padding, in_scan), x, w, dy, repeats=FLAGS.repeats) * 1e3
        for conv_fn, in_scan in ((native_conv, False), (native_conv, True), (loop_conv, True))
    ]
    print(f'{name:28s} {times[0]:9.1f} {times[1]:12.1f} {times[2]:10.1f} {times[1] / times[2]:11.1f}x', flush=True)


if __name__ == '__main__':
  cli.run(main)
