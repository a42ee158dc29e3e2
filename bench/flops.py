"""FLOPs per image of the DIR forward pass and train step, factored against dense plane fusion.

  python bench/flops.py [--config configs/dir_reference.py] [--train_batch 8] [--repeats 2] [--notiming]

Counted over convolutions and matrix products in the traced program (jaxpr), a multiply-add as 2 FLOPs:
the convention of `torch.utils.flop_counter`, so the PyTorch reference's count is comparable (every
conv gradient costs what its forward conv costs; padding taps count; a strided conv's input gradient
counts only the taps that meet real inputs). Scan bodies count once per iteration; of a `cond`'s branches
the costliest counts. XLA's own cost analysis of the compiled CPU program is printed beside it (it
counts elementwise work too). Then, unless `--notiming`: CPU time of the train step at `--train_batch`,
dense and factored compiled and timed in this run, with XLA's memory analysis and the peak RSS.

Last line: `train GFLOP/image: N (forward M)` for the config's fusion.
"""

import functools
import math
import resource
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.extend import core as jax_core

sys.path.insert(0, __file__.rsplit('/', 2)[0])  # the repository root, when run as a script

from bench.model import fake_batch  # noqa: E402
from configs import load_config  # noqa: E402
from data_prep import synthetic_mano  # noqa: E402
from dir_jax import checkpoint, cli, loss_settings  # noqa: E402
from dir_jax.mano import load_mano_pair  # noqa: E402
from dir_jax.model import image_space  # noqa: E402
from dir_jax.model.fusion import PlaneFusion  # noqa: E402
from dir_jax.train import state as state_lib  # noqa: E402
from dir_jax.train import step as step_lib  # noqa: E402


def _dot_flops(eqn) -> float:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  (_, rhs_contract), (_, rhs_batch) = eqn.params['dimension_numbers']
  rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2.0 * math.prod(lhs) * math.prod(rhs_free)


def _conv_flops(eqn) -> float:
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, spatial...)
  taps = math.prod(rhs[d] for d in rhs_spec[2:])
  dilation = math.prod(eqn.params['lhs_dilation'] or (1,))
  return 2.0 * math.prod(out) * taps * rhs[rhs_spec[1]] / dilation


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax_core.Jaxpr):
        yield item


def count_flops(jaxpr) -> float:
  """Multiply-add FLOPs (x2) of every dot_general and conv in `jaxpr` (a Jaxpr or ClosedJaxpr)."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif name == 'cond':
      total += max(count_flops(branch) for branch in eqn.params['branches'])
    elif name == 'scan':
      total += eqn.params['length'] * count_flops(eqn.params['jaxpr'])
    elif name == 'while':
      raise ValueError('count_flops: a while loop has no static trip count')
    else:
      total += sum(count_flops(sub) for sub in _sub_jaxprs(eqn))
  return total


def fusion_flops(size: int, method: str, img_feat_dim: int = 256, joint_dim: int = 64, train: bool = False) -> float:
  """FLOPs of one stage's plane fusion (`bone` planes of both hands) per image at grid side `size`.

  train: forward plus the gradients the train step takes (parameters, and the scalar fields and joint
  features, which carry gradients into the stage's regressor and joint embedding).
  """
  ends = tuple(map(tuple, image_space.BONE_ENDS.tolist()))
  module = PlaneFusion(img_feat_dim, ends, method)
  coef = jnp.zeros((1, size, size, 2, *image_space.BONE_ENDS.shape))
  feat = jnp.zeros((1, 2, 21, joint_dim))
  variables = module.init(jax.random.PRNGKey(0), coef, feat, False)

  def loss(params, coef, feat):
    out, _ = module.apply({**variables, 'params': params}, coef, feat, train, mutable=['batch_stats'])
    return jnp.sum(out)

  fn = jax.grad(loss, argnums=(0, 1, 2)) if train else loss
  return count_flops(jax.make_jaxpr(fn)(variables['params'], coef, feat))


def _programs(config, fusion: str, mano, batch_size: int):
  """(forward fn, train fn, their example arguments) of the config's model with `fusion`."""
  model_config = config.model.copy_and_resolve_references()
  model_config.fusion = fusion
  model = checkpoint.model_from_config(model_config)
  size = model_config.input_size
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), mano))()
  state = state_lib.create_train_state(
      model, state_lib.make_optimizer(config.optimizer, 1000, 100000), None, size, variables
  )
  batch = jax.tree.map(jnp.asarray, fake_batch(batch_size, config.image_size))
  images = jnp.zeros((batch_size, size, size, 3), jnp.float32)
  forward = lambda v, x: model.apply(v, x, mano, train=False)
  train = functools.partial(
      step_lib.train_step,
      model=model,
      mano=mano,
      loss_config=loss_settings.default_loss_config(),
      image_size=config.image_size,
      input_size=size,
  )
  return (forward, (variables, images)), (train, (state, batch))


FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('config', 'configs/dir_reference.py', 'config file', flag_values=FLAGS)
flags.DEFINE_integer('train_batch', 8, 'batch of the counted and timed programs', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 2, 'timed train steps (best of)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool('timing', True, 'compile and time the train steps; --notiming counts only', flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  config = load_config(FLAGS.config)
  synthetic_mano.write_all('/tmp/dir_bench_mano', seed=0)
  mano = load_mano_pair('/tmp/dir_bench_mano')
  print(
      f'{FLAGS.config}: configured fusion {config.model.fusion}; backend {jax.default_backend()}; '
      f'counted at batch {FLAGS.train_batch}, per image'
  )
  sizes = [size for size, _, _ in config.model.stages]
  if config.model.projection == 'bone':
    for kind in ('forward', 'train'):
      per_method = {
          m: sum(fusion_flops(s, m, config.model.img_feat_dim, config.model.joint_dim, kind == 'train') for s in sizes)
          for m in ('factored', 'dense')
      }
      print(
          f'plane fusion of the {len(sizes)} stages (grids {sizes}), {kind}: dense {per_method["dense"] / 1e9:.2f}, '
          f'factored {per_method["factored"] / 1e9:.3f} GFLOP/image: '
          f'{per_method["dense"] / per_method["factored"]:.1f}x fewer factored',
          flush=True,
      )
  fusions = (config.model.fusion,) + tuple(f for f in ('factored', 'dense') if f != config.model.fusion)
  counted, timed = {}, {}
  for fusion in fusions:
    programs = _programs(config, fusion, mano, FLAGS.train_batch)
    for kind, (fn, fn_args) in zip(('forward', 'train'), programs):
      flops = count_flops(jax.make_jaxpr(fn)(*fn_args)) / FLAGS.train_batch
      counted[fusion, kind] = flops
      line = f'{fusion:8s} {kind:7s}: {flops / 1e9:7.2f} GFLOP/image (convs + matmuls, multiply-add = 2)'
      if kind == 'forward' or FLAGS.timing:
        compiled = jax.jit(fn).lower(*fn_args).compile()
        xla = (compiled.cost_analysis() or {}).get('flops', float('nan')) / FLAGS.train_batch
        line += f'; XLA cost analysis {xla / 1e9:7.2f}'
        if kind == 'train':
          best = np.inf
          for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*fn_args))
            best = min(best, time.perf_counter() - start)
          timed[fusion] = best
          memory = compiled.memory_analysis()
          line += (
              f'; CPU step {best:.2f} s (best of {FLAGS.repeats})'
              f'; temporaries {memory.temp_size_in_bytes / 2 ** 20:.0f} MB'
              if memory
              else ''
          )
      print(line, flush=True)
  for kind in ('forward', 'train'):
    print(f'{kind}: dense / factored = {counted["dense", kind] / counted["factored", kind]:.2f}x fewer FLOPs factored')
  if timed:
    print(
        f'CPU train step at batch {FLAGS.train_batch}: dense {timed["dense"]:.2f} s, '
        f'factored {timed["factored"]:.2f} s, {timed["dense"] / timed["factored"]:.2f}x faster factored'
    )
  print(f'peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GB')
  configured = config.model.fusion
  print(
      f'train GFLOP/image: {counted[configured, "train"] / 1e9:.1f} '
      f'(forward {counted[configured, "forward"] / 1e9:.1f})'
  )


if __name__ == '__main__':
  cli.run(main)
