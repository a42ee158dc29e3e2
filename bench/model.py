"""DIR model benchmark: forward and train-step time and memory, and compile time against stage count.

  .venv/bin/python bench/model.py [--config configs/dir_reference.py] [--batch_sizes 1,8] [--train_batch 8]
                                  [--stages 2,3,4] [--repeats 3]

Prints, for the config's model on the default backend:
- eval forward time per batch and images/s at each batch size, train-step time (forward, losses,
  backward, AdamW) and images/s, with XLA's memory analysis of the compiled programs (arguments,
  outputs, temporaries) and the process's peak RSS;
- jit compile time of the forward pass with 2, 3, 4 ... refinement stages (first stage 16x16, the rest
  32x32), scanned and unrolled, and the ratios compile(N stages) / compile(2 stages) measured in this
  run: with `nn.scan` the ratio stays near 1, unrolled it grows with N.
"""

import functools
import resource
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from configs import load_config
from data_prep import synthetic_mano
from dir_jax import checkpoint, cli, loss_settings
from dir_jax.mano import load_mano_pair
from dir_jax.model.config import StageSpec
from dir_jax.train import state as state_lib
from dir_jax.train import step as step_lib


def fake_batch(batch_size: int, image_size: int, seed: int = 0) -> dict:
  """Random images and targets; hands 0.6 m in front of a 600 px camera."""
  rng = np.random.default_rng(seed)
  batch = {
      'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8),
      'seg': rng.integers(0, 3, (batch_size, image_size, image_size)).astype(np.int32),
      'dense': rng.random((batch_size, image_size, image_size, 3), dtype=np.float32),
      'intrinsics': np.tile(
          np.array([[600, 0, image_size / 2], [0, 600, image_size / 2], [0, 0, 1]], np.float32), (batch_size, 1, 1)
      ),
  }
  for side, x_m in (('left', -0.05), ('right', 0.05)):
    batch[f'mano_{side}_root_rotmat'] = np.tile(np.eye(3, dtype=np.float32), (batch_size, 1, 1))
    batch[f'mano_{side}_hand_pose'] = rng.normal(size=(batch_size, 45)).astype(np.float32) * 0.3
    batch[f'mano_{side}_betas'] = np.zeros((batch_size, 10), np.float32)
    batch[f'mano_{side}_trans'] = np.tile(np.array([x_m, 0.0, 0.6], np.float32), (batch_size, 1))
  return batch


def timed(fn, *args, repeats: int):
  """(compile seconds, best run seconds, compiled) for jit function `fn`."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - start)
  return compile_s, best, compiled


def memory_mb(compiled) -> str:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return 'n/a'
  mb = lambda b: b / 2**20
  return (
      f'args {mb(analysis.argument_size_in_bytes):.0f} MB, out {mb(analysis.output_size_in_bytes):.0f} MB, '
      f'temp {mb(analysis.temp_size_in_bytes):.0f} MB'
  )


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('config', 'configs/dir_reference.py', 'config file', flag_values=FLAGS)
flags.DEFINE_list('batch_sizes', ['1', '8'], 'forward batch sizes, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('train_batch', 8, 'train-step batch size', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_list(
    'stages', ['2', '3', '4'], 'refinement stage counts for the compile times, comma-separated', flag_values=FLAGS
)
flags.DEFINE_integer('repeats', 3, 'timed calls', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum('dtype', 'float32', ('float32', 'bfloat16'), 'compute dtype', flag_values=FLAGS)
flags.DEFINE_integer('mano_seed', 0, 'seed of the synthetic MANO pair', flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  config = load_config(FLAGS.config)
  dtype = None if FLAGS.dtype == 'float32' else jnp.bfloat16
  synthetic_mano.write_all('/tmp/dir_bench_mano', seed=FLAGS.mano_seed)
  mano = load_mano_pair('/tmp/dir_bench_mano')
  model = checkpoint.model_from_config(config.model, dtype)
  size = config.model.input_size
  print(
      f'backend {jax.default_backend()}, {jax.device_count()} device(s) ({jax.devices()[0].device_kind}); '
      f'{FLAGS.config}, input {size}x{size}, compute {FLAGS.dtype}'
  )
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), mano))()
  count = sum(x.size for x in jax.tree.leaves(variables['params']))
  print(f'parameters: {count:,}')

  forward = jax.jit(lambda v, x: model.apply(v, x, mano, train=False))
  for batch_size in [int(b) for b in FLAGS.batch_sizes]:
    images = jnp.asarray(np.random.default_rng(0).normal(size=(batch_size, size, size, 3)), jnp.float32)
    compile_s, run_s, compiled = timed(forward, variables, images, repeats=FLAGS.repeats)
    print(
        f'forward  batch {batch_size:3d}: {run_s * 1e3:8.1f} ms  {batch_size / run_s:7.1f} images/s  '
        f'(compile {compile_s:.1f} s; {memory_mb(compiled)})'
    )

  tx = state_lib.make_optimizer(config.optimizer, 1000, 100000)
  state = state_lib.create_train_state(model, tx, None, size, variables)
  batch = jax.tree.map(jnp.asarray, fake_batch(FLAGS.train_batch, config.image_size))
  train_step = jax.jit(
      functools.partial(
          step_lib.train_step,
          model=model,
          mano=mano,
          loss_config=loss_settings.default_loss_config(),
          image_size=config.image_size,
          input_size=size,
      )
  )
  compile_s, run_s, compiled = timed(train_step, state, batch, repeats=FLAGS.repeats)
  print(
      f'train    batch {FLAGS.train_batch:3d}: {run_s * 1e3:8.1f} ms  {FLAGS.train_batch / run_s:7.1f} images/s  '
      f'{1 / run_s:.2f} steps/s  (compile {compile_s:.1f} s; {memory_mb(compiled)})'
  )
  print(f'peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10:.0f} MB')

  images = jnp.zeros((1, size, size, 3), jnp.float32)
  first = model.config.stages[0]
  later = StageSpec(first.size * 2, 'c2', 2.0)
  compile_times = {}
  for scan in (True, False):
    for num in [int(n) for n in FLAGS.stages]:
      stages = (first,) + (later,) * (num - 1)
      staged = model.clone(config=model.config.replace(stages=stages, scan_stages=scan))
      abstract = jax.eval_shape(lambda x, m=staged: m.init(jax.random.PRNGKey(0), x, mano), images)
      start = time.perf_counter()
      jax.jit(lambda v, x, m=staged: m.apply(v, x, mano, train=False)).lower(abstract, images).compile()
      compile_times[scan, num] = time.perf_counter() - start
      print(f'compile forward, {num} stages, {"scanned " if scan else "unrolled"}: {compile_times[scan, num]:.1f} s')
  base = min(int(n) for n in FLAGS.stages)
  for scan in (True, False):
    ratios = ', '.join(
        f'{num}: {compile_times[scan, num] / compile_times[scan, base]:.2f}x' for (s, num) in compile_times if s == scan
    )
    print(f'compile time relative to {base} stages, {"scanned" if scan else "unrolled"}: {ratios}')


if __name__ == '__main__':
  cli.run(main)
