"""Orbax checkpoints of DIR: one layout for training runs and converted authors' checkpoints.

A checkpoint directory is an orbax `CheckpointManager` directory (`<dir>/<step>/...`). Each step holds
two items:
  'state'         a dict with at least 'variables' = {'params', 'batch_stats'}; training adds
                  'opt_state', 'step' and the data-iterator position (see `dir_jax.train`).
  'model_config'  JSON: the DIR module's fields (`model_config_dict`), so a checkpoint rebuilds its
                  own model.
Inference code restores only 'variables' (orbax partial restore), so optimizer state is never read.
Orbax writes a step to a temporary folder and renames it when complete, so a step that is listed
is complete; a step whose files are damaged afterwards is skipped with a warning, falling back to the
previous one (`restore_variables`, `latest_restorable_step`).
"""

import logging
import os
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp

from dir_jax.model.dir import DIR, StageSpec

STATE_ITEM = 'state'
CONFIG_ITEM = 'model_config'
_MODEL_FIELDS = ('center_idx', 'encoder_width', 'attention_dim', 'img_feat_dim', 'emb_dim', 'joint_dim', 'projection', 'use_gcn',
                 'use_transformer', 'transformer_blocks', 'heatmap_sigma', 'camera_scale_init', 'fusion', 'scan_stages')


class CheckpointError(FileNotFoundError):
  """No restorable checkpoint: the message names the directory and what to do."""


def model_config_dict(model: DIR) -> dict[str, Any]:
  """The JSON-serialisable fields that rebuild `model` (dtype excluded: it is a run-time choice)."""
  config = {name: getattr(model, name) for name in _MODEL_FIELDS}
  config['transformer_blocks'] = list(config['transformer_blocks'])
  config['stages'] = [[s.size, s.skip, s.threshold] for s in model.stages]
  return config


def model_from_config(config: Mapping[str, Any], dtype: Any = None) -> DIR:
  """The DIR module described by `model_config_dict` output (or a `config.model` ConfigDict)."""
  fields = {name: config[name] for name in _MODEL_FIELDS if name in config}
  if 'transformer_blocks' in fields:
    fields['transformer_blocks'] = tuple(fields['transformer_blocks'])
  stages = tuple(StageSpec(int(size), str(skip), float(threshold)) for size, skip, threshold in config['stages'])
  return DIR(stages=stages, dtype=dtype, **fields)


def manager(directory: str, max_to_keep: int | None = None, best_fn: Callable | None = None,
            best_mode: str = 'min', keep_checkpoints_without_metrics: bool = True,
            enable_async: bool = True) -> ocp.CheckpointManager:
  """A CheckpointManager with this project's two items."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, best_fn=best_fn, best_mode=best_mode,
      keep_checkpoints_without_metrics=keep_checkpoints_without_metrics,
      enable_async_checkpointing=enable_async, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=_item_handlers())


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  return {STATE_ITEM: ocp.PyTreeCheckpointHandler(), CONFIG_ITEM: ocp.JsonCheckpointHandler()}


def save_args(state: Mapping[str, Any], model: DIR) -> ocp.args.Composite:
  return ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeSave(dict(state)),
                               CONFIG_ITEM: ocp.args.JsonSave(model_config_dict(model))})


def save_variables(directory: str, variables: Mapping[str, Any], model: DIR, step: int = 0) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) of `model` as step `step`; returns the directory."""
  with manager(directory, enable_async=False) as mngr:
    mngr.save(step, args=save_args({'variables': dict(variables)}, model), force=True)
    mngr.wait_until_finished()
  return os.path.abspath(directory)


def restore_state_args(target: Mapping[str, Any]) -> ocp.args.Composite:
  """Restore arguments for the whole 'state' item into `target` (ShapeDtypeStructs with shardings)."""
  return ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))})


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_candidates(mngr: ocp.CheckpointManager, restore: Callable[[int], Any]) -> tuple[int, Any]:
  """Restores the newest step that reads back, warning about and skipping damaged newer steps."""
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'no checkpoint steps in {mngr.directory}')
  errors = []
  for step in steps:
    try:
      return step, restore(step)
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many types for damaged files
      logging.warning('checkpoint step %d in %s cannot be restored (%s: %s); trying the previous one',
                      step, mngr.directory, type(e).__name__, e)
      errors.append(f'step {step}: {type(e).__name__}: {e}')
  raise CheckpointError(f'no restorable checkpoint in {mngr.directory}: ' + '; '.join(errors))


def restore_variables(directory: str, step: int | None = None, dtype: Any = None,
                      sharding: jax.sharding.Sharding | None = None) -> tuple[DIR, dict, int]:
  """(model, variables, step) from a checkpoint directory of ours or a converted authors' checkpoint.

  Args:
    directory: a CheckpointManager directory (`train.py --workdir`'s `checkpoints/`, the workdir
      itself, or the output of `python -m dir_jax.convert.export_orbax`).
    step: the step to read; None = the newest restorable one.
    dtype: compute dtype of the returned model (None = float32).
    sharding: where to place the arrays (default: replicated on the first device).
  """
  if os.path.isdir(os.path.join(directory, 'checkpoints')):
    directory = os.path.join(directory, 'checkpoints')
  if not os.path.isdir(directory):
    raise CheckpointError(f'checkpoint directory not found: {directory} (give a train.py workdir or the output '
                          'of python -m dir_jax.convert.export_orbax)')
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  mngr = ocp.CheckpointManager(os.path.abspath(directory), item_handlers=_item_handlers())

  def restore(s):
    config = mngr.restore(s, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
    model = model_from_config(config, dtype)
    metadata = mngr.item_metadata(s)[STATE_ITEM]
    tree = metadata.tree if hasattr(metadata, 'tree') else metadata
    target = {'variables': _abstract(tree['variables'], sharding)}
    restored = mngr.restore(s, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                           partial_restore=True)}))
    return model, restored[STATE_ITEM]['variables']

  if step is not None:
    model, variables = restore(step)
  else:
    step, (model, variables) = restore_candidates(mngr, restore)
  mngr.close()
  return model, variables, step
