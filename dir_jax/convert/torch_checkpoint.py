"""Maps a PyTorch DIR state dict onto the Flax model's variables.

The state dict's entries by kind: docs/architecture.md#checkpoint-conversion.

The Flax tree mirrors the PyTorch module names, so one rule set converts every entry:
`weight` -> `kernel` (Conv2d (O,I,kh,kw) -> (kh,kw,I,O); Conv1d k=1 (O,I,1) and Linear (O,I) -> (I,O))
or `scale` (1-D norm weights); `bias` -> `bias`; `running_mean`/`running_var` -> batch_stats
`mean`/`var`; PGraphConv `W`, `e_0`, `e_1` and `spatial_pos_embed` copy as they are. The decoder's
per-stage modules (`skip_layer4`, `fusion_layer4`, `projecter_4`, `enhance_layer4` for stage 1, suffix
3 for stage 2) map to `decoder/group_g/...`, stacked along a leading axis inside scanned groups.
A model with per-hand BatchNorm statistics in the modules shared by both hands (`per_hand_bn_stats`,
docs/quirks.md#q15) has `mean_left`, `mean_right` (and `var_*`) where the checkpoint has one blended
`running_mean` (`running_var`): the blend is copied into every slot, so the converted model's outputs
equal those of the model without slots.
"""

import dataclasses
import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
from flax import traverse_util

from dir_jax.model.config import StageSpec
from dir_jax.model.dir import stage_groups

# Entries that are not learned or never used in the forward pass (MANO buffers, projection grids, BN
# counters, the CE class weights: docs/architecture.md#checkpoint-conversion, docs/quirks.md#q30);
# ignored by name.
IGNORED_PATTERNS = (r'\.mano_layer_(left|right)\.', r'\.img_gird$', r'\.num_batches_tracked$', r'^seg_loss\.weight$')
UNUSED_PATTERNS = (r'^backbone\.fc\.',)  # ResNet-50's ImageNet classifier
_STAGE_MODULE = re.compile(r'^decoder\.(skip_layer|fusion_layer|enhance_layer|projecter_)(\d)\.(.*)$')
_SLOT_STAT = re.compile(r'^(mean|var)_(\w+)$')  # a BatchNorm's per-slot running statistic (layers.BatchNorm.slots)


class ConversionError(ValueError):
  """A state dict does not fit the model: the message names the keys."""


@dataclasses.dataclass
class ConversionReport:
  loaded: list[str]
  ignored: list[str]
  unused: list[str]
  missing: list[str]  # Flax variables no torch key filled

  def summary(self) -> str:
    return (
        f'{len(self.loaded)} loaded, {len(self.ignored)} ignored (MANO/grid/counter/loss constants), '
        f'{len(self.unused)} unused by this config, {len(self.missing)} missing'
    )


def load_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
  """Reads a DIR checkpoint into {key: float32/int numpy array}.

  Accepts `.pth`/`.pt` (`{'net': state_dict}` or a bare state_dict; read with
  `torch.load(weights_only=True)`, so no code in the file runs) and `.npz` exports of the same keys
  (no torch needed). A DataParallel `module.` prefix is stripped.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint not found: {path}')
  if path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
      raise ConversionError(f'{path}: not a readable .npz state dict ({type(e).__name__}: {e})') from e
  else:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(
          f'reading {path} needs torch; where torch is installed, save the state dict '
          'with numpy.savez(out, **{k: v.numpy() for k, v in state_dict.items()}) and pass the .npz'
      ) from e
    try:
      raw = torch.load(path, map_location='cpu', weights_only=True)
    except (
        Exception
    ) as e:  # torch raises struct.error, IndexError, RuntimeError, UnpicklingError ... on non-checkpoints
      raise ConversionError(
          f'{path}: not a PyTorch checkpoint that loads with weights_only=True '
          f'({type(e).__name__}: {str(e)[:200]}); give the .pth file of a DIR state dict'
      ) from e
    if isinstance(raw, Mapping) and 'net' in raw and isinstance(raw['net'], Mapping):
      raw = raw['net']
    if not isinstance(raw, Mapping):
      raise ConversionError(f'{path}: expected a state dict or {{"net": state_dict}}, got {type(raw).__name__}')
    state = {k: v.detach().cpu().numpy() for k, v in raw.items() if hasattr(v, 'detach')}
  return {k[len('module.') :] if k.startswith('module.') else k: v for k, v in state.items()}


def _slot_targets(flat_template: Mapping[tuple[str, ...], Any]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
  """Per-slot running statistics of the template, by the single statistic they stand for.

  {('batch_stats', ..., 'mean'): [(..., 'mean_left'), (..., 'mean_right')], ...} (docs/quirks.md#q15).
  """
  out: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
  for path in flat_template:
    m = _SLOT_STAT.match(path[-1])
    if path[0] == 'batch_stats' and m:
      out.setdefault(path[:-1] + (m.group(1),), []).append(path)
  return out


def copy_shared_stats_to_slots(variables: Mapping[str, Any], template: Mapping[str, Any]) -> dict:
  """Variables of a model without per-hand BatchNorm slots, in the layout of `template` (one with them).

  Each single running statistic (`mean`, `var`) whose module has per-slot statistics in `template`
  (`mean_left`, `mean_right`, ...; `per_hand_bn_stats`, docs/quirks.md#q15) is copied into every
  slot; every other variable is passed through. Variables already in the template's layout pass
  through unchanged, so this also accepts a checkpoint trained with the slots.

  Args:
    variables: {'params', 'batch_stats'}, e.g. restored from an orbax checkpoint trained without slots.
    template: {'params', 'batch_stats'} of the model with slots (arrays or ShapeDtypeStructs).

  Raises:
    ConversionError: the result's variables or shapes differ from the template's (named).
  """
  flat_template = traverse_util.flatten_dict(template)
  slots = _slot_targets(flat_template)
  out = {}
  for path, value in traverse_util.flatten_dict(variables).items():
    for target in ([path] if path in flat_template else slots.get(path, [path])):
      out[target] = value
  return _fitted(out, flat_template)


def _fitted(flat: Mapping[tuple[str, ...], Any], flat_template: Mapping[tuple[str, ...], Any]) -> dict:
  """`flat` unflattened, once its paths and shapes are the template's; ConversionError naming each
  variable missing, extra or of another shape."""
  problems = (
      [f'{"/".join(p)} missing' for p in flat_template if p not in flat]
      + [f'{"/".join(p)} not in the model' for p in flat if p not in flat_template]
      + [
          f'{"/".join(p)} has shape {tuple(np.shape(v))}, expected {tuple(flat_template[p].shape)}'
          for p, v in flat.items()
          if p in flat_template and tuple(np.shape(v)) != tuple(flat_template[p].shape)
      ]
  )
  if problems:
    raise ConversionError(f'{len(problems)} variables do not fit the model: ' + ', '.join(problems[:20]))
  return traverse_util.unflatten_dict(flat)


def blend_slots_into_shared(variables: Mapping[str, Any], template: Mapping[str, Any], momentum: float = 0.9) -> dict:
  """Variables of a model with per-hand BatchNorm slots, in the layout of `template` (one without).

  The inverse of `copy_shared_stats_to_slots` for a model trained with the slots: each single running
  statistic of `template` becomes the blend that one shared set of statistics accumulates when both
  hands' calls update it in turn, left then right, at every step (docs/quirks.md#q15): in the
  stationary limit of the exponential average with `momentum`, `(momentum * left + right) /
  (1 + momentum)` (0.474 left + 0.526 right at the reference's 0.9). Every other variable passes through.

  Raises:
    ConversionError: the result's variables or shapes differ from the template's (named).
  """
  flat = traverse_util.flatten_dict(variables)
  out = {}
  slotted = set()
  for shared, slots in _slot_targets(flat).items():
    by_slot = {_SLOT_STAT.match(path[-1]).group(2): np.asarray(flat[path], np.float64) for path in slots}
    if set(by_slot) != {'left', 'right'}:
      raise ConversionError(f'{"/".join(shared)}: per-hand slots {sorted(by_slot)}, expected left and right')
    blend = (momentum * by_slot['left'] + by_slot['right']) / (1.0 + momentum)
    out[shared] = blend.astype(np.asarray(flat[slots[0]]).dtype)
    slotted.update(slots)
  out.update({path: value for path, value in flat.items() if path not in slotted})
  return _fitted(out, traverse_util.flatten_dict(template))


def flax_location(
    key: str,
    value_ndim: int,
    stages: Sequence[StageSpec],
    stage_suffixes: Sequence[str] = ('4', '3'),
    scan_stages: bool = True,
) -> tuple[str, tuple[str, ...], int | None]:
  """Where a torch state-dict entry lives in the Flax variables.

  Args:
    key: torch key, e.g. 'decoder.projecter_4.pos_emb_left.1.running_mean'.
    value_ndim: rank of the torch tensor (1-D `weight`s are norm scales).
    stages, stage_suffixes, scan_stages: as in `convert_state_dict`.

  Returns:
    (collection 'params' or 'batch_stats', path inside it, index along the stacked axis of a scanned
    stage group or None).
  """
  return _target(key, value_ndim, {s: i for i, s in enumerate(stage_suffixes)}, stage_groups(stages, scan_stages))


def _target(key: str, value_ndim: int, stage_index: dict[str, int], groups: list[list[int]]):
  """torch key -> (collection, flax path, stacked position or None)."""
  parts = key.split('.')
  module, leaf = parts[:-1], parts[-1]
  stacked = None
  m = _STAGE_MODULE.match(key)
  if m:
    name, suffix, rest = m.groups()
    if suffix not in stage_index:
      raise ConversionError(f'{key}: no refinement stage with suffix {suffix} in this config')
    stage = stage_index[suffix]
    g = next(i for i, grp in enumerate(groups) if stage in grp)
    stacked = groups[g].index(stage) if g > 0 else None
    module = ['decoder', f'group_{g}', name.rstrip('_')] + rest.split('.')[:-1]
  if leaf == 'weight':
    return 'params', tuple(module) + ('kernel' if value_ndim >= 2 else 'scale',), stacked
  if leaf in ('running_mean', 'running_var'):
    return 'batch_stats', tuple(module) + (leaf[len('running_') :],), stacked
  return 'params', tuple(module) + (leaf,), stacked


def _to_flax_layout(value: np.ndarray, flax_leaf: str) -> np.ndarray:
  if flax_leaf != 'kernel':
    return value
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 3:
    if value.shape[2] != 1:
      raise ConversionError(f'Conv1d with kernel {value.shape[2]}: only kernel 1 is used in DIR')
    return value[:, :, 0].T
  return value.T


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    template: Mapping[str, Any],
    stages: Sequence[StageSpec],
    stage_suffixes: Sequence[str] = ('4', '3'),
    transformer_blocks: Sequence[int] = (1, 2, 3),
    scan_stages: bool = True,
) -> tuple[dict, ConversionReport]:
  """Fills the Flax variables `template` (e.g. `jax.eval_shape(model.init, ...)`) from a torch state dict.

  Args:
    state_dict: {torch key: numpy array}.
    template: {'params': ..., 'batch_stats': ...} with arrays or ShapeDtypeStructs.
    stages: the model's stage specs (to place stage modules in their scan groups).
    stage_suffixes: torch module suffix of each refinement stage, in order (released: '4', '3').
    transformer_blocks: blocks the model runs; other `STEblocks.N` entries are reported as unused.
    scan_stages: the model's `scan_stages`.

  Returns:
    (variables as nested dicts of float32 numpy arrays, report).

  Raises:
    ConversionError: a key maps to no Flax variable, a shape differs (the key is named), or a Flax
      variable is left unfilled.
  """
  groups = stage_groups(stages, scan_stages)
  stage_index = {s: i for i, s in enumerate(stage_suffixes)}
  unused_patterns = UNUSED_PATTERNS + tuple(
      rf'\.interaction\.STEblocks\.{b}\.' for b in range(16) if b not in transformer_blocks
  )
  flat_template = {
      (col,) + path: leaf
      for col in ('params', 'batch_stats')
      for path, leaf in traverse_util.flatten_dict(template.get(col, {})).items()
  }
  slots = _slot_targets(flat_template)
  filled: dict[tuple[str, ...], np.ndarray] = {}
  report = ConversionReport([], [], [], [])
  unknown = []
  for key, value in state_dict.items():
    if any(re.search(p, key) for p in IGNORED_PATTERNS):
      report.ignored.append(key)
      continue
    if any(re.search(p, key) for p in unused_patterns):
      report.unused.append(key)
      continue
    collection, path, stacked = _target(key, np.asarray(value).ndim, stage_index, groups)
    full = (collection,) + path
    # One blended running statistic fills every per-hand slot of a shared module (docs/quirks.md#q15).
    targets = [full] if full in flat_template else slots.get(full, [])
    if not targets:
      unknown.append(f'{key} -> {"/".join(full)}')
      continue
    converted = _to_flax_layout(np.asarray(value, np.float32), path[-1])
    for target in targets:
      expected = tuple(flat_template[target].shape)
      if stacked is not None:
        if converted.shape != expected[1:]:
          raise ConversionError(
              f'{key}: shape {tuple(value.shape)} -> {converted.shape}, expected {expected[1:]} '
              f'for {"/".join(target)}'
          )
        buf = filled.setdefault(target, np.full(expected, np.nan, np.float32))
        buf[stacked] = converted
      else:
        if converted.shape != expected:
          raise ConversionError(
              f'{key}: shape {tuple(value.shape)} -> {converted.shape}, expected {expected} ' f'for {"/".join(target)}'
          )
        filled[target] = converted
    report.loaded.append(key)
  if unknown:
    raise ConversionError(f'{len(unknown)} checkpoint keys match no model variable: ' + ', '.join(unknown[:20]))
  report.missing = sorted('/'.join(p) for p in flat_template if p not in filled or np.isnan(filled[p]).any())
  if report.missing:
    raise ConversionError(
        f'{len(report.missing)} model variables not in the checkpoint: ' + ', '.join(report.missing[:20])
    )
  variables = traverse_util.unflatten_dict(filled)
  return variables, report


def import_torchvision_resnet50(
    state_dict: Mapping[str, np.ndarray], variables: Mapping[str, Any], encoder_name: str = 'backbone'
) -> tuple[dict, ConversionReport]:
  """Replaces the encoder's variables with a torchvision ResNet-50 state dict (e.g. IMAGENET1K_V2).

  DIR's backbone is torchvision's ResNet-50 with identical names, so the entries convert
  with the same rules as a DIR checkpoint under the `backbone.` prefix. `fc.*` (the ImageNet
  classifier) is reported as unused and `num_batches_tracked` ignored. Get the file with
  `torchvision.models.resnet50(weights='IMAGENET1K_V2').state_dict()` saved by `torch.save`, or
  the `.pth` torchvision downloads (`resnet50-11ad3fa6.pth`); read it with `load_torch_checkpoint`.

  Args:
    state_dict: {torchvision key: numpy array}, e.g. 'layer1.0.conv1.weight'.
    variables: the model's variables ({'params', 'batch_stats'}), e.g. from `model.init`.
    encoder_name: name of the encoder module in `variables`.

  Returns:
    (variables with the encoder replaced, report).

  Raises:
    ConversionError: an entry matches no encoder variable or has the wrong shape, or an encoder
      variable is left unfilled.
  """
  encoder = {col: {encoder_name: variables[col][encoder_name]} for col in ('params', 'batch_stats')}
  prefixed = {f'{encoder_name}.{k}': v for k, v in state_dict.items()}
  filled, report = convert_state_dict(prefixed, encoder, stages=())
  out = {col: dict(tree) for col, tree in variables.items()}
  for col in ('params', 'batch_stats'):
    out[col][encoder_name] = filled[col][encoder_name]
  return out, report
