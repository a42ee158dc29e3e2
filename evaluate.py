"""Evaluates a checkpoint with the paper's metrics (spec §13), per hand and per refinement stage.

  python evaluate.py --checkpoint runs/exp1 --config=configs/dir_reference.py \
      --config.data.data_dir=DATA --config.mano_dir=MANO --out runs/exp1/eval

`--checkpoint` is a `train.py` workdir (its newest restorable checkpoint; `runs/exp1/best` for the
best one) or the output of `python -m dir_jax.convert.export_orbax` (a converted authors' checkpoint).
The model is rebuilt from the checkpoint's own model config; the config file supplies the data, the
MANO folder and evaluation settings. Writes `metrics.json`, `metrics.md` (our numbers next to the
released checkpoint's README numbers) and `pck.png` to `--out`.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from configs import DEFAULT_CONFIG

flags.DEFINE_string('checkpoint', None, 'train.py workdir or export_orbax output', required=True)
flags.DEFINE_string('out', None, 'output folder (default: <checkpoint>/eval)')
flags.DEFINE_string('split', None, 'split to evaluate (default: config.data.eval_split)')
config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'config file for data and evaluation settings (default: the '
                                'installed package\'s configs/dir_reference.py, not one in the current folder)')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from dir_jax import checkpoint, metrics  # pylint: disable=import-outside-toplevel
  from dir_jax.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from dir_jax.mano import load_mano_pair  # pylint: disable=import-outside-toplevel
  from dir_jax.train import trainer  # pylint: disable=import-outside-toplevel
  trainer.quiet_library_logs()
  config = FLAGS.config
  if FLAGS.split:
    config.data.eval_split = FLAGS.split
  out_dir = FLAGS.out or os.path.join(FLAGS.checkpoint, 'eval')
  os.makedirs(out_dir, exist_ok=True)
  model, variables, step = checkpoint.restore_variables(FLAGS.checkpoint, dtype=trainer.compute_dtype(config.compute_dtype))
  logging.info('evaluating %s (step %d) on %s', FLAGS.checkpoint, step, config.data.eval_split)
  config.model.input_size = _input_size(config, model)
  mano = load_mano_pair(config.mano_dir)
  builder = input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name)
  results = trainer.evaluate(model, variables, mano, builder, config, trainer.make_mesh())
  results['checkpoint'], results['step'] = os.path.abspath(FLAGS.checkpoint), int(step)
  with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
    json.dump(results, f, indent=1)
  table = metrics.markdown_table(results, metrics.paper_reference())
  with open(os.path.join(out_dir, 'metrics.md'), 'w') as f:
    f.write(table + '\n')
  metrics.pck_plot(results, os.path.join(out_dir, 'pck.png'))
  print(table)
  print(f'wrote metrics.json, metrics.md and pck.png to {out_dir}')


def _input_size(config, model) -> int:
  """The network input side implied by the checkpoint: the first stage runs at 1/16 of the input."""
  implied = model.stages[0].size * 16
  if implied != config.model.input_size:
    logging.info('input size %d (from the checkpoint\'s first stage %d), not the config\'s %d', implied,
                 model.stages[0].size, config.model.input_size)
  return implied


if __name__ == '__main__':
  app.run(main)
