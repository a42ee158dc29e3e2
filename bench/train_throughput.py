"""Train images/s, forward latency, compile time and device memory of one model variant, on any backend.

  python bench/train_throughput.py [--config configs/dir_reference.py] [--dtype float32|bfloat16]
      [--fusion factored|dense] [--train_batch 64] [--forward_batches 1,64] [--steps 20] [--rows FILE]

`bench/gpu.sh` runs it once per (dtype, fusion) on a lent GPU, each variant in its own process so that
the device's peak memory belongs to that variant; the processes compile concurrently and take turns
to time (`--timing_lock`). Random images and targets (`bench/model.py`'s
`fake_batch`) at the config's sizes; the train step is the trainer's (`train_step`: forward, 42 loss
terms, backward, AdamW), timed as the median of `--steps` steps after a warm-up step, each step's
outputs awaited. float32 runs at JAX's default matmul precision, which lets XLA use TF32 on GPUs.
Prints one line per measurement and, with `--rows`, appends a Markdown table row to FILE:
| dtype | fusion | train images/s | train step ms | compile s | forward ms b1 | forward ms bN | peak GB | GFLOP/image |.
Last line: `train images/s: N`.
"""

import contextlib
import fcntl
import statistics
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, __file__.rsplit('/', 2)[0])  # the repository root, when run as a script

from bench.model import fake_batch  # noqa: E402
from configs import load_config  # noqa: E402
from data_prep import synthetic_mano  # noqa: E402
from dir_jax import checkpoint, cli, loss_settings  # noqa: E402
from dir_jax.mano import load_mano_pair  # noqa: E402
from dir_jax.train import state as state_lib  # noqa: E402
from dir_jax.train import step as step_lib  # noqa: E402


def _median_seconds(fn, args, steps: int) -> float:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


@contextlib.contextmanager
def _exclusive(lock_path: str):
  """Holds an exclusive lock on `lock_path` (no-op when empty): concurrent variants compile in parallel
  but are timed one at a time."""
  if not lock_path:
    yield
    return
  with open(lock_path, 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _peak_gb() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use', float('nan')) / 1e9


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('config', 'configs/dir_reference.py', 'config file', flag_values=FLAGS)
flags.DEFINE_enum('dtype', 'float32', ('float32', 'bfloat16'), 'compute dtype', flag_values=FLAGS)
flags.DEFINE_enum('fusion', None, ('factored', 'dense'), "plane fusion; default: the config's", flag_values=FLAGS)
flags.DEFINE_integer('train_batch', 64, 'train-step batch size', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_list('forward_batches', ['1', '64'], 'forward batch sizes, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('steps', 20, 'timed steps (median)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string('rows', '', 'append a Markdown row to this file', flag_values=FLAGS)
flags.DEFINE_string('timing_lock', '', 'time only while holding an exclusive lock on this file', flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  config = load_config(FLAGS.config)
  if FLAGS.fusion:
    config.model.fusion = FLAGS.fusion
  dtype = None if FLAGS.dtype == 'float32' else jnp.bfloat16
  synthetic_mano.write_all('/tmp/dir_bench_mano', seed=0)
  mano = load_mano_pair('/tmp/dir_bench_mano')
  model = checkpoint.model_from_config(config.model, dtype)
  size = config.model.input_size
  device = jax.devices()[0]
  print(
      f'backend {jax.default_backend()} ({device.device_kind}), jax {jax.__version__}; {FLAGS.config}, '
      f'compute {FLAGS.dtype}, fusion {model.config.fusion}',
      flush=True,
  )

  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), mano))()
  tx = state_lib.make_optimizer(config.optimizer, 1000, 100000)
  state = state_lib.create_train_state(model, tx, None, size, variables)
  batch = jax.tree.map(jnp.asarray, fake_batch(FLAGS.train_batch, config.image_size))
  train_step = jax.jit(
      lambda s, b: step_lib.train_step(
          s,
          b,
          model=model,
          mano=mano,
          loss_config=loss_settings.default_loss_config(),
          image_size=config.image_size,
          input_size=size,
      ),
      donate_argnums=0,
  )
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  flops = (compiled.cost_analysis() or {}).get('flops', float('nan'))
  with _exclusive(FLAGS.timing_lock):
    state, _ = compiled(state, batch)  # warm-up (autotuning, first transfers)
    jax.block_until_ready(state)
    times = []
    for _ in range(FLAGS.steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  train_ips = FLAGS.train_batch / step_s
  print(
      f'train step, batch {FLAGS.train_batch}: {step_s * 1e3:.1f} ms median of {FLAGS.steps} '
      f'(min {min(times) * 1e3:.1f}), {train_ips:.1f} images/s; compile {compile_s:.1f} s; '
      f'XLA cost analysis {flops / FLAGS.train_batch / 1e9:.1f} GFLOP/image; loss {float(metrics["loss"]):.3f}',
      flush=True,
  )

  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  forward = jax.jit(lambda v, x: model.apply(v, x, mano, train=False)['stages'][-1])
  forward_ms = {}
  for batch_size in [int(b) for b in FLAGS.forward_batches]:
    images = jnp.asarray(np.random.default_rng(0).normal(size=(batch_size, size, size, 3)), dtype or jnp.float32)
    start = time.perf_counter()
    fwd = forward.lower(variables, images).compile()
    fwd_compile_s = time.perf_counter() - start
    with _exclusive(FLAGS.timing_lock):
      jax.block_until_ready(fwd(variables, images))
      forward_ms[batch_size] = _median_seconds(fwd, (variables, images), FLAGS.steps) * 1e3
    print(
        f'forward, batch {batch_size}: {forward_ms[batch_size]:.2f} ms median '
        f'({batch_size / forward_ms[batch_size] * 1e3:.1f} images/s); compile {fwd_compile_s:.1f} s',
        flush=True,
    )
  peak_gb = _peak_gb()
  print(f'peak device memory of this process: {peak_gb:.2f} GB')
  if FLAGS.rows:
    cells = [FLAGS.dtype, model.config.fusion, f'{train_ips:.1f}', f'{step_s * 1e3:.1f}', f'{compile_s:.1f}']
    cells += [f'{forward_ms[b]:.2f}' for b in forward_ms] + [f'{peak_gb:.2f}', f'{flops / FLAGS.train_batch / 1e9:.1f}']
    with open(FLAGS.rows, 'a') as f:
      f.write('| ' + ' | '.join(cells) + ' |\n')
  print(f'train images/s: {train_ips:.1f}')


if __name__ == '__main__':
  cli.run(main)
