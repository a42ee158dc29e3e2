"""Evaluates a checkpoint with the field's metrics under named protocols, per hand and per refinement stage.

  python evaluate.py --checkpoint runs/exp1 --config=configs/dir_reference.py \
      --config.data.data_dir=DATA --out runs/exp1/eval [--config.mano_dir=MANO] [--compilation_cache=DIR]

`--checkpoint` is a `train.py` workdir RUN (its newest restorable checkpoint in RUN/checkpoints, not
RUN/best), RUN/checkpoints or RUN/best (their newest step), one step folder such as RUN/best/1200
(exactly that step), or the output of `python -m dir_jax.convert.export_orbax` (a converted authors'
checkpoint). The model is rebuilt from the checkpoint's own model config and run at the input size it
was trained with (recorded by `train.py`, else implied by its first stage). MANO: `--config.mano_dir`
when given on the command line, else the folder the checkpoint was trained with (an error asks for
`--config.mano_dir` when that folder is gone), else the config file's. The config file supplies the
data and evaluation settings. `--compilation_cache` keeps compiled programs on disk for the next run
(default ~/.cache/dir_jax/jax_cache, under $XDG_CACHE_HOME when set; `--compilation_cache=` turns it
off).

Every number belongs to an evaluation protocol named in words (docs/evaluation.md, dir_jax/protocol.py):
root joint x scaling x ground-truth joints (regressed from the GT MANO mesh, or InterHand2.6M's
triangulated joints with their validity) x subset. `--protocol KEY` (repeatable) chooses them, e.g.
`--protocol wrist-unscaled-triangulated-human_annot --human_annot aid_human_annot_test.txt`; by
default DIR's three settings on MANO joints, the Procrustes-aligned errors, and, when the dataset
stores triangulated joints (interhand26m >= 1.1.0), wrist-unscaled-triangulated-interacting (plus
-single and -all on the builder's 'all' config: --config.data.dataset_name=interhand26m/all; MANO
numbers then cover its interacting samples).

Writes `metrics.json` (every protocol's numbers, per-joint errors, and 'protocols': key -> name),
`metrics.md` (our numbers by protocol next to the released checkpoint's README numbers, then peers'
published numbers under the protocol each was measured with) and `pck.png` to `--out` (default:
CHECKPOINT/eval; for a step folder, eval-STEP beside it).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from configs import DEFAULT_CONFIG

flags.DEFINE_string(
    'checkpoint',
    None,
    'train.py workdir, its checkpoints/ or best/, one step folder in them, or export_orbax output',
    required=True,
)
flags.DEFINE_string('out', None, 'output folder (default: <checkpoint>/eval; for a step folder, eval-<step> beside it)')
flags.DEFINE_string(
    'compilation_cache',
    None,
    'persistent compilation cache folder (default: '
    '$XDG_CACHE_HOME/dir_jax/jax_cache or ~/.cache/dir_jax/jax_cache; empty turns it off)',
)
flags.DEFINE_string('split', None, 'split to evaluate (default: config.data.eval_split)')
flags.DEFINE_multi_string(
    'protocol',
    None,
    'evaluation protocol key ROOT-SCALING-GTJOINTS-SUBSET (dir_jax/protocol.py, '
    "docs/evaluation.md), repeatable; default: DIR's three settings on MANO joints, and "
    'wrist-unscaled-triangulated-interacting when the dataset stores triangulated joints',
)
flags.DEFINE_string(
    'human_annot',
    None,
    "for a *-human_annot protocol: InterHand2.6M's list of human-annotated "
    'annotation ids (aid_human_annot_test.txt as InterWild distributes it: one id per line)',
)
config_flags.DEFINE_config_file(
    'config',
    DEFAULT_CONFIG,
    'config file for data and evaluation settings (default: the '
    "installed package's configs/dir_reference.py, not one in the current folder)",
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from dir_jax import checkpoint, compilation_cache, evaluation, metrics, protocol  # pylint: disable=import-outside-toplevel
  from dir_jax.data import input_pipeline  # pylint: disable=import-outside-toplevel
  from dir_jax.mano import load_mano_pair  # pylint: disable=import-outside-toplevel
  from dir_jax.train import trainer  # pylint: disable=import-outside-toplevel

  trainer.quiet_library_logs()
  config = FLAGS.config
  if FLAGS.split:
    config.data.eval_split = FLAGS.split
  mano_flag = config.mano_dir if 'mano_dir' in config_flags.get_override_values(FLAGS['config']) else None
  try:  # the cache first: JAX opens it at the process's first compilation
    cache_dir = compilation_cache.configure(FLAGS.compilation_cache, '--compilation_cache')
    restored = checkpoint.restore_checkpoint(FLAGS.checkpoint, dtype=trainer.compute_dtype(config.compute_dtype))
    mano_dir, mano_source = checkpoint.mano_dir_choice(mano_flag, restored, config.mano_dir, '--config.mano_dir')
  except (compilation_cache.CompilationCacheError, checkpoint.CheckpointError, checkpoint.ManoDirGoneError) as e:
    raise SystemExit(f'error: {e}') from e
  logging.info(
      'evaluating step %d of %s (%s) on %s',
      restored.step,
      restored.location.directory,
      restored.location.description,
      config.data.eval_split,
  )
  logging.info(
      'MANO: %s (%s); persistent compilation cache: %s', os.path.abspath(mano_dir), mano_source, cache_dir or 'off'
  )
  out_dir = FLAGS.out or _default_out_dir(FLAGS.checkpoint, restored.location)
  os.makedirs(out_dir, exist_ok=True)
  config.model.input_size = _input_size(config, restored)
  mano = load_mano_pair(mano_dir)
  builder = input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name)
  dataset = f'{builder.data_dir} ({builder.info.full_name})'
  try:
    settings, triangulated = metrics.choose_protocols(
        FLAGS.protocol,
        input_pipeline.has_triangulated_joints(builder),
        dataset,
        input_pipeline.has_single_hand_examples(builder),
    )
    human_annot_ids = (
        protocol.read_annotation_ids(FLAGS.human_annot, '--human_annot')
        if any(p.subset == 'human_annot' for p in triangulated)
        else None
    )
  except ValueError as e:
    raise SystemExit(f'error: {e}') from e
  logging.info('protocols: %s', '; '.join(p.name for p in [*settings.values(), *triangulated]))
  results = evaluation.evaluate(
      restored.model,
      restored.variables,
      mano,
      builder,
      config,
      settings=settings,
      triangulated=triangulated,
      human_annot_ids=human_annot_ids,
      progress=True,
  )
  results['checkpoint'], results['step'] = os.path.abspath(FLAGS.checkpoint), int(restored.step)
  print(evaluation.write_report(results, out_dir))
  print(f'wrote metrics.json, metrics.md and pck.png to {out_dir}')


def _default_out_dir(checkpoint_path: str, location) -> str:
  """CHECKPOINT/eval, or eval-STEP beside a step folder: never inside one, which orbax owns (and deletes)."""
  if location.step is None:
    return os.path.join(checkpoint_path, 'eval')
  return os.path.join(location.directory, f'eval-{location.step}')


def _input_size(config, restored) -> int:
  """The network input side the checkpoint was trained with (`inference.trained_input_side_px`)."""
  from dir_jax import inference  # pylint: disable=import-outside-toplevel

  trained, source = inference.trained_input_side_px(restored.model.config, restored.input_size_px)
  if trained != config.model.input_size:
    logging.info("input size %d (%s), not the config's %d", trained, source, config.model.input_size)
  return trained


if __name__ == '__main__':
  app.run(main)
