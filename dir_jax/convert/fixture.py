"""Reading a reference fixture folder: the authors' weights, inputs, targets and bone masks.

A fixture folder is `shared/fixtures/dir_reference` or what `dump_torch_reference` writes: the
authors' PyTorch DIR run on CPU (its README gives every array's meaning). `compare_reference` and
`compare_training` read it through these functions.
"""

import importlib.util
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

from dir_jax.convert.torch_checkpoint import convert_state_dict, load_torch_checkpoint
from dir_jax.mano import load_mano_pair
from dir_jax.mano.constants import SIDES as HANDS
from dir_jax.model.config import RELEASED_STAGES
from dir_jax.model.dir import DIR

# The released code's mask radius per projecter (cells): the reference's masks are its distances below these.
REFERENCE_THRESHOLDS = {'4': RELEASED_STAGES[0].threshold, '3': RELEASED_STAGES[1].threshold}
# Where the released projecters live in the Flax model's decoder trees (params, intermediates, masks):
# projecter_4 is group_0, one unstacked stage; projecter_3 is group_1, a scanned group of one whose
# arrays carry a leading stage axis of length 1.
RELEASED_GROUPS = (('4', 'group_0', False), ('3', 'group_1', True))


def released_stages(decoder_tree: Mapping) -> list[tuple[str, Mapping, Callable]]:
  """[(projecter suffix '4' / '3', that stage's subtree of `decoder_tree`, unstack)] for the released model.

  `unstack` turns one of the subtree's arrays into the stage's own (drops the scan axis of group_1).
  """
  return [
      (suffix, decoder_tree[group], (lambda x: x[0]) if stacked else (lambda x: x))
      for suffix, group, stacked in RELEASED_GROUPS
  ]


def recipe_weights(fixture_dir: str) -> dict[str, np.ndarray]:
  """The fixture's weights, regenerated with its own numpy recipe."""
  spec = importlib.util.spec_from_file_location('dir_fixture_recipe', os.path.join(fixture_dir, 'recipe.py'))
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  with open(os.path.join(fixture_dir, 'state_dict_shapes.json')) as f:
    entries = json.load(f)
  with open(os.path.join(fixture_dir, 'summary.json')) as f:
    seed = json.load(f)['seed']
  return recipe.make_weights(entries, seed)


def build(fixture_dir: str, checkpoint: str | None = None, model: DIR | None = None, mano_dir: str | None = None):
  """(model, variables, mano pair, images NHWC) for the fixture; MANO from `mano_dir` or the fixture's `mano/`."""
  model = model or DIR()
  mano = load_mano_pair(mano_dir or os.path.join(fixture_dir, 'mano'))
  images = np.load(os.path.join(fixture_dir, 'inputs.npz'))['img'].transpose(0, 2, 3, 1)
  state = load_torch_checkpoint(checkpoint) if checkpoint else recipe_weights(fixture_dir)
  template = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, mano), images)
  variables, _ = convert_state_dict(
      state,
      template,
      model.config.stages,
      transformer_blocks=model.config.transformer_blocks,
      scan_stages=model.config.scan_stages,
  )
  return model, variables, mano, images


def train_targets(train: Any) -> dict[str, np.ndarray]:
  """The fixture's loss targets (`gt.*` of train.npz) in `losses.dir_losses`' format (NHWC, 256x256)."""
  targets = {
      f'{k}_{h}': np.asarray(train[f'gt.{k}_{h}'])
      for k in ('joint_2d', 'mesh_2d', 'joint_3d', 'mesh_3d')
      for h in HANDS
  }
  targets.update({f'center_{h}': np.asarray(train[f'gt.center_{h}'])[:, 0] for h in HANDS})
  targets['seg'] = np.asarray(train['gt.seg'])[:, 0].astype(np.int32)
  targets['dense'] = np.asarray(train['gt.dense']).transpose(0, 2, 3, 1)
  return targets


def reference_masks(reference: Any, prefix: str) -> dict[str, np.ndarray]:
  """`{prefix}decoder.projecter_*.bone_mask_*` from the reference's distances (files that store only those)."""
  masks = {}
  for suffix, threshold in REFERENCE_THRESHOLDS.items():
    for h in HANDS:
      key = f'{prefix}decoder.projecter_{suffix}.bone_dist_{h}'
      masks[key.replace('bone_dist', 'bone_mask')] = np.asarray(reference[key]) < threshold
  return masks


def forced_masks(reference: Any, prefix: str) -> dict:
  """The reference's bone masks as the model's `forced_masks` collection (released stages).

  Args:
    reference: arrays with `{prefix}decoder.projecter_{4,3}.bone_dist_{side}` (B, S*S, 20) in cells.
    prefix: '' (eval_outputs.npz) or 'train.' (train.npz) or 'step1.' (train_steps.npz).
  """
  tree = {}
  for suffix, group, stacked in RELEASED_GROUPS:
    masks = {
        h: np.asarray(reference[f'{prefix}decoder.projecter_{suffix}.bone_dist_{h}']) < REFERENCE_THRESHOLDS[suffix]
        for h in HANDS
    }
    tree[group] = {'projecter': {h: m[None] if stacked else m for h, m in masks.items()}}
  return {'decoder': tree}


def as_float64(tree):
  """Every floating leaf (numpy or jax, MANO assets included) as a float64 numpy array; needs jax x64 enabled.

  The Flax model then computes in float64 throughout (its float32 casts only ever widen), which shows
  how much of a difference to the float32 reference is the reference's own rounding.
  """

  def widen(x):
    x = np.asarray(x)
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x

  return jax.tree.map(widen, tree)
