"""Pictures and the summary of the embedded default job (`make demo`, last step).

  python -m dir_jax.demo --workdir outputs/demo/run --eval outputs/demo/eval --config configs/synthetic.py \
      --out outputs/demo --num_images 6

After `make demo` has generated the synthetic InterHand2.6M, built its TFRecords, trained
`configs/synthetic.py` and evaluated it, this writes:
  pictures.png      one row per held-out test image: input crop | each stage's predicted meshes
                    (initial regressor, then every refinement stage) | ground truth
  pictures/<i>.png  the same rows, one file each
  summary.md        the held-out errors at initialisation (the trainer's metrics_0.json) next to the
                    trained model's (evaluate.py's metrics.json), then how much the predictions
                    follow each image: `held-out 2D root correlation: N` over every held-out image
                    (`root_correlation` of the predicted and true wrist positions, the lower of the
                    two hands; 1 = each prediction moves with its image, 0 = the same place for
                    every image) and the spread of the positions and of the per-image errors;
                    with `config.model.per_hand_bn_stats`, the held-out errors with per-hand BatchNorm
                    statistics next to those with the reference's blend of both hands
                    (`per_hand_bn_effect`, docs/quirks.md#q15)
"""

import json
import os
from typing import Sequence

import jax
import numpy as np
from absl import flags
from PIL import Image

from configs import load_config
from dir_jax import checkpoint, cli, evaluation, inference, metrics, protocol
from dir_jax.convert.torch_checkpoint import blend_slots_into_shared
from dir_jax.data import input_pipeline
from dir_jax.mano import load_mano_pair
from dir_jax.mano.constants import SIDES
from dir_jax.model.dir import abstract_variables
from dir_jax.predict import render_hands, stage_titles
from dir_jax.render import overlay
from dir_jax.render.stages_figure import titled_row
from dir_jax.train.targets import ground_truth

_DIR_KEY = protocol.DIR.key
_TRIANGULATED_KEY = protocol.INTERHAND26M_INTERACTING.key
# (result key without the stage, metric label); the table names each row's protocol in words.
SUMMARY_KEYS = (
    (f'{_DIR_KEY}/mpjpe/all', 'MPJPE (mm)'),
    (f'{_DIR_KEY}/mpvpe/all', 'MPVPE (mm)'),
    (f'{protocol.DIR_MIDDLE_MCP_UNSCALED.key}/mpjpe/all', 'MPJPE (mm)'),
    (f'{_TRIANGULATED_KEY}/mpjpe/all', 'MPJPE (mm)'),
    (f'{metrics.PROCRUSTES_KEY}/mpjpe/all', 'MPJPE (mm)'),
    (f'{_DIR_KEY}/mrrpe/all', 'MRRPE (mm)'),
    (f'{_DIR_KEY}/miaa_joint/all', 'MIAA joints (px)'),
    (f'{_DIR_KEY}/auc/all', 'PCK AUC 0-50 mm (higher is better)'),
)


def _held_out_batches(workdir: str, config, mano, batch_size: int):
  """(model, batch, outputs, targets, valid) for each eval batch of the held-out split, numpy, with the
  trained variables of `workdir`."""
  restored = checkpoint.restore_checkpoint(workdir)
  model, variables = restored.model, restored.variables
  builder = input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name)
  ds, _ = input_pipeline.create_eval_dataset(builder, config.data, batch_size=batch_size)
  forward = inference.make_forward(model, inference.trained_input_side_px(model.config, restored.input_size_px)[0])
  for batch in input_pipeline.numpy_batches(ds):
    valid = batch.pop('valid')
    outputs = jax.device_get(forward(variables, batch['image'], mano))
    yield model, batch, outputs, jax.device_get(ground_truth(batch, mano, config.image_size)), valid


def _picture_rows(model, batch, outputs, targets, valid, faces, num_images: int) -> list[np.ndarray]:
  """Rows of (input | every stage's prediction | ground truth) for the batch's first valid images."""
  rows = []
  for i in np.flatnonzero(valid)[:num_images]:
    crop = batch['image'][i]
    predicted = [render_hands(crop, {k: v[i] for k, v in stage.items()}, faces) for stage in outputs['stages']]
    truth = overlay.render_overlay(
        crop,
        [
            (
                targets[f'mesh_3d_{side}'][i],
                faces[side],
                overlay.LEFT_HAND_RGB if side == 'left' else overlay.RIGHT_HAND_RGB,
            )
            for side in ('left', 'right')
        ],
        batch['intrinsics'][i],
    )
    rows.append(titled_row([crop, *predicted, truth], ['input', *stage_titles(model), 'ground truth']))
  return rows


def held_out_report(workdir: str, config, num_images: int, batch_size: int = 16) -> tuple[list[np.ndarray], dict]:
  """One pass over the held-out split with the trained model of `workdir`.

  Returns:
    (rows, following): picture rows of the first `num_images` held-out images (input | every stage's
    predicted meshes | ground truth), and how the predicted (last stage) wrist positions follow the
    true ones over every held-out image, in crop pixels: {side: {'correlation': `root_correlation`,
    'true_spread_px', 'predicted_spread_px': RMS distance of the positions from their mean,
    'error_px': (N,) per-image distance}, 'num_images': N}.
  """
  mano = load_mano_pair(config.mano_dir)
  faces = {side: np.asarray(mano[side].faces) for side in SIDES}
  rows, predicted, true = [], {side: [] for side in SIDES}, {side: [] for side in SIDES}
  for model, batch, outputs, targets, valid in _held_out_batches(workdir, config, mano, batch_size):
    rows += _picture_rows(model, batch, outputs, targets, valid, faces, num_images - len(rows))
    for side in SIDES:
      predicted[side].append(outputs['stages'][-1][f'joint_uv_{side}'][valid, 0, :2])
      true[side].append(targets[f'joint_2d_{side}'][valid, 0, :2])
  return rows, _following(predicted, true, config.image_size)


def root_correlation(predicted, true) -> float:
  """How much predicted 2D positions follow the true ones across images: (N, 2), (N, 2) -> [-1, 1].

  The correlation of the two sets of positions about their means, both coordinates together:
  sum((p - mean p) . (t - mean t)) / sqrt(sum |p - mean p|^2 * sum |t - mean t|^2). 1 when the
  predictions are the truth up to a shift and a positive scale, 0 when they do not move with it
  (e.g. the same place for every image); NaN when either set does not vary.
  """
  p = np.asarray(predicted, np.float64) - np.mean(predicted, axis=0)
  t = np.asarray(true, np.float64) - np.mean(true, axis=0)
  denominator = np.sqrt(np.sum(p * p) * np.sum(t * t))
  return float(np.sum(p * t) / denominator) if denominator > 0 else float('nan')


def _following(predicted: dict, true: dict, image_size: int) -> dict:
  """`held_out_report`'s following from per-batch lists of (n, 2) predicted and true wrist uv_norm."""
  to_px = image_size / 2.0  # uv_norm -> crop pixels (a shift does not matter here)
  out = {'num_images': int(sum(len(v) for v in true['left']))}
  for side in SIDES:
    p, t = np.concatenate(predicted[side]) * to_px, np.concatenate(true[side]) * to_px
    spread = lambda x: float(np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=-1))))
    out[side] = {
        'correlation': root_correlation(p, t),
        'true_spread_px': spread(t),
        'predicted_spread_px': spread(p),
        'error_px': np.linalg.norm(p - t, axis=-1),
    }
  return out


def following_lines(following: dict) -> str:
  """The summary's lines on `held_out_report`'s following: the headline correlation, then a table per hand."""
  lowest = min(following[side]['correlation'] for side in SIDES)
  lines = [
      f'held-out 2D root correlation: {lowest:.2f} (left {following["left"]["correlation"]:.2f}, right '
      f'{following["right"]["correlation"]:.2f}; 1: each prediction moves with its image, 0: the same place '
      'for every image)',
      '',
      f'| held-out wrist positions ({following["num_images"]} images, crop pixels) | left | right |',
      '| --- | --- | --- |',
  ]
  rows = (
      ('spread of the true positions (RMS about their mean)', lambda f: f'{f["true_spread_px"]:.1f}'),
      ('spread of the predicted positions', lambda f: f'{f["predicted_spread_px"]:.1f}'),
      (
          'per-image error: mean ± std [min, max]',
          lambda f: (
              f'{f["error_px"].mean():.1f} ± {f["error_px"].std():.1f} [{f["error_px"].min():.1f}, '
              f'{f["error_px"].max():.1f}]'
          ),
      ),
  )
  for label, cell in rows:
    lines.append(f'| {label} | {cell(following["left"])} | {cell(following["right"])} |')
  return '\n'.join(lines)


def summary_table(initial: dict, trained: dict, stage: int) -> str:
  lines = [
      f'| held-out synthetic test images ({trained["num_samples"]}) | at initialisation | trained |',
      '| --- | --- | --- |',
  ]
  names = metrics.protocol_names(sorted({key.split('/')[0] for key, _ in SUMMARY_KEYS}))
  for key, label in SUMMARY_KEYS:
    full = f'stage{stage}/{key}'
    if full in trained:
      lines.append(f'| {label}, {names[key.split("/")[0]]} | {initial[full]:.2f} | {trained[full]:.2f} |')
  return '\n'.join(lines)


def per_hand_bn_effect(workdir: str, config, trained: dict) -> str:
  """Held-out errors of a model trained with `per_hand_bn_stats` (its per-hand statistics, `trained`:
  evaluate.py's metrics) next to the same model with the reference's blend of both hands' statistics
  (`blend_slots_into_shared`, BatchNorm momentum 0.9), as a Markdown table. Training is the same
  either way; only the statistics used at evaluation differ."""
  model, variables, _ = checkpoint.restore_variables(workdir)
  shared = model.clone(config=model.config.replace(per_hand_bn_stats=False))
  blended = blend_slots_into_shared(jax.device_get(variables), abstract_variables(shared, config.model.input_size))
  settings = {key: metrics.SETTINGS[key] for key in (_DIR_KEY,)}
  without_volume = config.copy_and_resolve_references()
  without_volume.eval_voxel_m = None  # the table does not show it
  reference = evaluation.evaluate(
      shared,
      blended,
      load_mano_pair(config.mano_dir),
      input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name),
      without_volume,
      settings=settings,
      triangulated=(),
  )
  stage = f'stage{len(model.config.stages)}'
  lines = [
      "| held-out, last stage | per-hand statistics (this model) | the reference's blend of both hands |",
      '| --- | --- | --- |',
  ]
  for key, label in (
      (f'{_DIR_KEY}/mpjpe/all', 'MPJPE (mm)'),
      (f'{_DIR_KEY}/mpvpe/all', 'MPVPE (mm)'),
      (f'{_DIR_KEY}/miaa_joint/all', 'MIAA joints (px)'),
  ):
    lines.append(
        f'| {label}, {protocol.DIR.name} | {trained[f"{stage}/{key}"]:.2f} | {reference[f"{stage}/{key}"]:.2f} |'
    )
  return '\n'.join(lines)


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string('workdir', None, 'train.py workdir', flag_values=FLAGS, required=True)
flags.DEFINE_string('eval', None, "evaluate.py's output folder (metrics.json)", flag_values=FLAGS, required=True)
flags.DEFINE_string(
    'config', None, 'the config file the run was trained with (configs/*.py)', flag_values=FLAGS, required=True
)
flags.DEFINE_string('out', None, 'output folder', flag_values=FLAGS, required=True)
flags.DEFINE_integer('num_images', 6, 'held-out test images in pictures.png', lower_bound=1, flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
  """Writes the pictures and summary.md for the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  config = load_config(FLAGS.config)
  os.makedirs(os.path.join(FLAGS.out, 'pictures'), exist_ok=True)
  rows, following = held_out_report(FLAGS.workdir, config, FLAGS.num_images)
  for i, row in enumerate(rows):
    Image.fromarray(row).save(os.path.join(FLAGS.out, 'pictures', f'{i}.png'))
  Image.fromarray(np.concatenate(rows, axis=0)).save(os.path.join(FLAGS.out, 'pictures.png'))
  with open(os.path.join(FLAGS.workdir, 'metrics_0.json')) as f:
    initial = json.load(f)
  with open(os.path.join(FLAGS.eval, 'metrics.json')) as f:
    trained = json.load(f)
  table = summary_table(initial, trained, len(config.model.stages)) + '\n\n' + following_lines(following)
  if config.model.per_hand_bn_stats:
    table += '\n\n' + per_hand_bn_effect(FLAGS.workdir, config, trained)
  with open(os.path.join(FLAGS.out, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  print(f'pictures: {os.path.join(FLAGS.out, "pictures.png")}')
  return 0


if __name__ == '__main__':
  cli.run(main)
