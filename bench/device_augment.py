"""The train step with the augmentation on the device against the plain train step, in one run.

  .venv/bin/python bench/device_augment.py [--config configs/synthetic.py] [--batch 16] [--steps 10] [--rounds 3]

Both steps are the trainer's (`train_step`: forward, loss terms, backward, AdamW) on the same lean
batch (uint8 256x256 images, labels at the heads' grid, as `input_pipeline` ships them with
`label_size`); one of them first augments the batch as `config.data.augment_on='device'` does
(`device_augment.augment_batch` at the network's input side, the config's switches). The steps are
timed in alternating rounds (median of `--steps` steps per round, median over rounds), each step's
outputs awaited; the augmentation alone is timed as well. Random images and targets (`bench/model.py`'s
`fake_batch`), synthetic MANO. Last line: `device augmentation step / plain step: R`.
"""

import statistics
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
from absl import flags

sys.path.insert(0, __file__.rsplit('/', 2)[0])  # the repository root, when run as a script

from bench.model import fake_batch  # noqa: E402
from configs import load_config  # noqa: E402
from data_prep import synthetic_mano  # noqa: E402
from dir_jax import checkpoint, cli, losses  # noqa: E402
from dir_jax.data import label_grid  # noqa: E402
from dir_jax.mano import load_mano_pair  # noqa: E402
from dir_jax.train import state as state_lib  # noqa: E402
from dir_jax.train import trainer  # noqa: E402

FLAGS = flags.FlagValues()  # this script's own flags (dir_jax.cli)
flags.DEFINE_string('config', 'configs/synthetic.py', 'config file (the demo by default)', flag_values=FLAGS)
flags.DEFINE_integer('batch', 16, 'batch size', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('steps', 10, 'timed steps per round (median)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('rounds', 3, 'alternating rounds (median)', lower_bound=1, flag_values=FLAGS)


def _median_step_seconds(step_fn, state, batch, steps: int):
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, statistics.median(times)


def main(argv: Sequence[str]) -> None:
  """The benchmark, for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)

  config = load_config(FLAGS.config)
  synthetic_mano.write_all('/tmp/dir_bench_mano', seed=0)
  mano = load_mano_pair('/tmp/dir_bench_mano')
  model = checkpoint.model_from_config(config.model)
  size, label_size = config.model.input_size, label_grid.label_side(model.config)

  batch = fake_batch(FLAGS.batch, config.image_size)
  batch['seg'] = losses.downsample_seg_nearest(batch['seg'], label_size).astype(jnp.uint8)
  batch['dense'] = losses.downsample_dense_bilinear(batch['dense'], label_size)
  batch = jax.tree.map(jnp.asarray, batch)
  config.data.augment_on = 'device'
  augmented_step = trainer.bind_train_step(config, model, mano)
  config.data.augment_on = 'host'
  plain_step = trainer.bind_train_step(config, model, mano)
  augment_fn = augmented_step.keywords['augment']

  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), mano))()
  tx = state_lib.make_optimizer(config.optimizer, 1000, 100000)
  state = state_lib.create_train_state(model, tx, None, size, variables)
  steps, compile_s = {}, {}
  for name, step in (('plain', plain_step), ('device augmentation', augmented_step)):
    step_fn = jax.jit(step)
    start = time.perf_counter()
    steps[name] = step_fn.lower(state, batch).compile()
    compile_s[name] = time.perf_counter() - start
    jax.block_until_ready(steps[name](state, batch))  # warm-up
  augment_only = jax.jit(lambda b, step: augment_fn(b, step=step))
  jax.block_until_ready(augment_only(batch, 0))

  seconds = {name: [] for name in (*steps, 'augmentation alone')}
  for _ in range(FLAGS.rounds):
    for name, step_fn in steps.items():
      state, median = _median_step_seconds(step_fn, state, batch, FLAGS.steps)
      seconds[name].append(median)
    times = []
    for i in range(FLAGS.steps):
      start = time.perf_counter()
      jax.block_until_ready(augment_only(batch, i))
      times.append(time.perf_counter() - start)
    seconds['augmentation alone'].append(statistics.median(times))
  medians = {name: statistics.median(values) for name, values in seconds.items()}

  print(
      f'backend {jax.default_backend()}, jax {jax.__version__}; {FLAGS.config}: {config.image_size}x{config.image_size} '
      f'images, network input {size}x{size}, labels {label_size}x{label_size}, batch {FLAGS.batch}; '
      f'median of {FLAGS.steps} steps x {FLAGS.rounds} alternating rounds'
  )
  for name, median in medians.items():
    extra = f', compile {compile_s[name]:.1f} s' if name in compile_s else ''
    print(f'  {name:20s} {median * 1e3:8.1f} ms{extra}')
  ratio = medians['device augmentation'] / medians['plain']
  print(f'device augmentation step / plain step: {ratio:.3f}')


if __name__ == '__main__':
  cli.run(main)
