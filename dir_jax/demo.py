"""Pictures and the summary of the embedded default job (`make demo`, last step).

  python -m dir_jax.demo --workdir outputs/demo/run --eval outputs/demo/eval --config configs/synthetic.py \
      --out outputs/demo --num-images 6

After `make demo` has generated the synthetic InterHand2.6M, built its TFRecords, trained
`configs/synthetic.py` and evaluated it, this writes:
  pictures.png      one row per held-out test image: input crop | predicted meshes | ground truth
  pictures/<i>.png  the same rows, one file each
  summary.md        the held-out errors at initialisation (the trainer's metrics_0.json) next to the
                    trained model's (evaluate.py's metrics.json)
"""

import argparse
import json
import os
import sys

import jax
import numpy as np
from PIL import Image

from configs import load_config
from dir_jax import checkpoint, metrics, protocol
from dir_jax.data import input_pipeline
from dir_jax.mano import load_mano_pair
from dir_jax.predict import render_hands
from dir_jax.render import overlay
from dir_jax.render.stages_figure import titled_row
from dir_jax.train import step as step_lib
from dir_jax.train.targets import ground_truth

_DIR_KEY = protocol.DIR.key
_TRIANGULATED_KEY = protocol.INTERHAND26M_INTERACTING.key
# (result key without the stage, metric label); the table names each row's protocol in words.
SUMMARY_KEYS = ((f'{_DIR_KEY}/mpjpe/all', 'MPJPE (mm)'),
                (f'{_DIR_KEY}/mpvpe/all', 'MPVPE (mm)'),
                (f'{protocol.DIR_MIDDLE_MCP_UNSCALED.key}/mpjpe/all', 'MPJPE (mm)'),
                (f'{_TRIANGULATED_KEY}/mpjpe/all', 'MPJPE (mm)'),
                (f'{metrics.PROCRUSTES_KEY}/mpjpe/all', 'MPJPE (mm)'),
                (f'{_DIR_KEY}/mrrpe/all', 'MRRPE (mm)'),
                (f'{_DIR_KEY}/miaa_joint/all', 'MIAA joints (px)'),
                (f'{_DIR_KEY}/auc/all', 'PCK AUC 0-50 mm (higher is better)'))


def picture_rows(workdir: str, config, num_images: int) -> list[np.ndarray]:
  """Rows of (input | prediction of the last stage | ground truth) for the first test images."""
  model, variables, _ = checkpoint.restore_variables(workdir)
  mano = load_mano_pair(config.mano_dir)
  builder = input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name)
  ds, _ = input_pipeline.create_eval_dataset(builder, config.data, batch_size=num_images)
  batch = next(input_pipeline.numpy_batches(ds))
  valid = batch.pop('valid')
  input_size = model.stages[0].size * 16
  images = step_lib.model_input(batch, input_size)
  outputs = jax.device_get(jax.jit(lambda v, x: model.apply(v, x, mano, train=False))(variables, images))
  targets = jax.device_get(ground_truth(batch, mano, config.image_size))
  faces = {side: np.asarray(mano[side].faces) for side in ('left', 'right')}
  rows = []
  for i in np.flatnonzero(valid):
    crop = batch['image'][i]
    stage = {k: v[i] for k, v in outputs['stages'][-1].items()}
    predicted = render_hands(crop, stage, faces)
    truth = overlay.render_overlay(
        crop, [(targets[f'mesh_3d_{side}'][i], faces[side], overlay.LEFT_HAND_RGB if side == 'left'
                else overlay.RIGHT_HAND_RGB) for side in ('left', 'right')], batch['intrinsics'][i])
    rows.append(titled_row([crop, predicted, truth], ['input', 'prediction', 'ground truth']))
  return rows


def summary_table(initial: dict, trained: dict, stage: int) -> str:
  lines = [f'| held-out synthetic test images ({trained["num_samples"]}) | at initialisation | trained |',
           '| --- | --- | --- |']
  names = metrics.protocol_names(sorted({key.split('/')[0] for key, _ in SUMMARY_KEYS}))
  for key, label in SUMMARY_KEYS:
    full = f'stage{stage}/{key}'
    if full in trained:
      lines.append(f'| {label}, {names[key.split("/")[0]]} | {initial[full]:.2f} | {trained[full]:.2f} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='train.py workdir')
  parser.add_argument('--eval', required=True, help="evaluate.py's output folder (metrics.json)")
  parser.add_argument('--config', required=True, help='the config the run was trained with')
  parser.add_argument('--out', required=True)
  parser.add_argument('--num-images', type=int, default=6)
  args = parser.parse_args(argv)
  config = load_config(args.config)
  os.makedirs(os.path.join(args.out, 'pictures'), exist_ok=True)
  rows = picture_rows(args.workdir, config, args.num_images)
  for i, row in enumerate(rows):
    Image.fromarray(row).save(os.path.join(args.out, 'pictures', f'{i}.png'))
  Image.fromarray(np.concatenate(rows, axis=0)).save(os.path.join(args.out, 'pictures.png'))
  with open(os.path.join(args.workdir, 'metrics_0.json')) as f:
    initial = json.load(f)
  with open(os.path.join(args.eval, 'metrics.json')) as f:
    trained = json.load(f)
  table = summary_table(initial, trained, len(config.model.stages))
  with open(os.path.join(args.out, 'summary.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  print(f'pictures: {os.path.join(args.out, "pictures.png")}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
