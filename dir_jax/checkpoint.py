"""Orbax checkpoints of DIR: one layout for training runs and converted authors' checkpoints.

A checkpoint directory is an orbax `CheckpointManager` directory (`<dir>/<step>/...`). Each step holds
two items:
  'state'         a dict with at least 'variables' = {'params', 'batch_stats'}; training adds
                  'opt_state', 'step' and the data-iterator position (see `dir_jax.train`).
  'model_config'  JSON: the model's `ModelConfig` (`model_config_dict`), so a checkpoint rebuilds its
                  own model; checkpoints written by `train.py` add 'training' = {'mano_dir': absolute
                  MANO folder, 'input_size_px': network input side} (`training_facts`; older
                  checkpoints lack it and restore all the same).
Inference code restores only 'variables' (orbax partial restore), so optimizer state is never read.
`restore_checkpoint` takes any location a user would give (`resolve_location`): a `train.py` workdir,
its `checkpoints/` or `best/`, one step folder in them, or `python -m dir_jax.convert.export_orbax`
output.
Orbax writes a step to a temporary folder and renames it when complete, so a step that is listed
is complete; a step whose files are damaged afterwards is skipped with a warning, falling back to the
previous one (`restore_checkpoint`, `restore_candidates`).
"""

import dataclasses
import logging
import os
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp

from dir_jax.model.config import ModelConfig
from dir_jax.model.dir import DIR

STATE_ITEM = 'state'
CONFIG_ITEM = 'model_config'
TRAINING_KEY = 'training'  # in the 'model_config' JSON: what the run was trained with (`training_facts`)
CHECKPOINTS_DIR = 'checkpoints'  # train.py's workdir/checkpoints/: the latest steps
BEST_DIR = 'best'  # train.py's workdir/best/: the step with the best evaluation metric
ACCEPTED_LOCATIONS = (
    'a train.py workdir RUN (its newest checkpoint in RUN/checkpoints), RUN/checkpoints or RUN/best, '
    'one step folder in them (e.g. RUN/best/1200 or RUN/checkpoints/400), or the folder written '
    'by python -m dir_jax.convert.export_orbax'
)
# Keys of a stored model config, or of a `config.model` ConfigDict, that are not `ModelConfig` fields.
_NOT_MODEL_FIELDS = (TRAINING_KEY, 'input_size')


class CheckpointError(FileNotFoundError):
  """No restorable checkpoint: the message names the directory and what to do."""


class ManoDirGoneError(FileNotFoundError):
  """The MANO folder a checkpoint was trained with no longer exists; the message says which flag to give."""


@dataclasses.dataclass(frozen=True)
class CheckpointLocation:
  """What a user's checkpoint path points at: a CheckpointManager directory and the step to read.

  Attributes:
    directory: absolute CheckpointManager directory (`<directory>/<step>/...`).
    step: the step to read; None = the newest one that reads back.
    description: what the path was taken as, for the log (names the choice between checkpoints/ and best/).
  """

  directory: str
  step: int | None
  description: str


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
  """A restored model with what its checkpoint remembers of its training run.

  Attributes:
    model: the DIR module rebuilt from the checkpoint's model config.
    variables: {'params', 'batch_stats'} placed on the requested sharding.
    step: the step that was read.
    location: where it was read from.
    mano_dir: absolute MANO folder the run was trained with; None when the checkpoint does not record it
      (written before it was recorded, or converted from the authors' checkpoint).
    input_size_px: network input side the run was trained with; None when not recorded.
  """

  model: DIR
  variables: dict
  step: int
  location: CheckpointLocation
  mano_dir: str | None
  input_size_px: int | None


def model_config_dict(model: DIR) -> dict[str, Any]:
  """The JSON-serialisable `ModelConfig` that rebuilds `model` (dtype excluded: it is a run-time choice)."""
  return model.config.to_dict()


def model_from_config(config: Mapping[str, Any], dtype: Any = None) -> DIR:
  """The DIR module described by `model_config_dict` output (with or without the training facts) or by
  a `config.model` ConfigDict; unknown field names are refused (`ModelConfig.from_mapping`)."""
  return DIR(ModelConfig.from_mapping(config, ignore=_NOT_MODEL_FIELDS), dtype=dtype)


def manager(
    directory: str,
    max_to_keep: int | None = None,
    best_fn: Callable | None = None,
    best_mode: str = 'min',
    keep_checkpoints_without_metrics: bool = True,
    enable_async: bool = True,
) -> ocp.CheckpointManager:
  """A CheckpointManager with this project's two items."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      best_fn=best_fn,
      best_mode=best_mode,
      keep_checkpoints_without_metrics=keep_checkpoints_without_metrics,
      enable_async_checkpointing=enable_async,
      create=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_handlers=_item_handlers())


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
  return {STATE_ITEM: ocp.PyTreeCheckpointHandler(), CONFIG_ITEM: ocp.JsonCheckpointHandler()}


def training_facts(mano_dir: str, input_size_px: int) -> dict[str, Any]:
  """What a training run remembers in its checkpoints: its MANO folder (absolute) and network input side."""
  return {'mano_dir': os.path.abspath(mano_dir), 'input_size_px': int(input_size_px)}


def save_args(state: Mapping[str, Any], model: DIR, training: Mapping[str, Any] | None = None) -> ocp.args.Composite:
  """Save arguments for `state` of `model`, with `training_facts` output when given."""
  config = model_config_dict(model)
  if training is not None:
    config[TRAINING_KEY] = dict(training)
  return ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeSave(dict(state)), CONFIG_ITEM: ocp.args.JsonSave(config)})


def save_variables(
    directory: str, variables: Mapping[str, Any], model: DIR, step: int = 0, training: Mapping[str, Any] | None = None
) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) of `model` as step `step`; returns the directory."""
  with manager(directory, enable_async=False) as mngr:
    mngr.save(step, args=save_args({'variables': dict(variables)}, model, training), force=True)
    mngr.wait_until_finished()
  return os.path.abspath(directory)


def restore_state_args(target: Mapping[str, Any]) -> ocp.args.Composite:
  """Restore arguments for the whole 'state' item into `target` (ShapeDtypeStructs with shardings)."""
  return ocp.args.Composite(
      **{
          STATE_ITEM: ocp.args.PyTreeRestore(
              item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
          )
      }
  )


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
      logging.warning(
          'checkpoint step %d in %s cannot be restored (%s: %s); trying the previous one',
          step,
          mngr.directory,
          type(e).__name__,
          e,
      )
      errors.append(f'step {step}: {type(e).__name__}: {e}')
  raise CheckpointError(f'no restorable checkpoint in {mngr.directory}: ' + '; '.join(errors))


def resolve_location(path: str) -> CheckpointLocation:
  """Where a user's checkpoint path points (any of `ACCEPTED_LOCATIONS`).

  A step folder (`RUN/best/1200`) is exactly that step. A workdir (a folder with `checkpoints/`) is its
  `checkpoints/`: the newest step that reads back, the one training resumes from, not `best/`.

  Raises:
    CheckpointError: `path` is none of these; the message names it and lists the accepted forms.
  """
  if not os.path.isdir(path):
    problem = 'is a file' if os.path.exists(path) else 'does not exist'
    raise CheckpointError(f'checkpoint directory not found: {path} {problem}. Give {ACCEPTED_LOCATIONS}')
  absolute = os.path.abspath(path)
  name, parent = os.path.basename(absolute), os.path.dirname(absolute)
  if name.isdigit() and os.path.isdir(os.path.join(absolute, STATE_ITEM)):
    return CheckpointLocation(parent, int(name), f'step folder {absolute}')
  checkpoints_dir, best_dir = os.path.join(absolute, CHECKPOINTS_DIR), os.path.join(absolute, BEST_DIR)
  if os.path.isdir(checkpoints_dir):
    best_note = f'; its best-metric checkpoint is in {best_dir}: give that for it' if os.path.isdir(best_dir) else ''
    return CheckpointLocation(
        checkpoints_dir, None, f'train.py workdir {absolute}: the newest checkpoint in {CHECKPOINTS_DIR}/{best_note}'
    )
  if ocp.utils.checkpoint_steps(absolute):
    return CheckpointLocation(absolute, None, f'checkpoint directory {absolute}: its newest checkpoint')
  raise CheckpointError(
      f'no checkpoint steps in {path}: it holds no step folders (<step>/{STATE_ITEM}) and no '
      f'{CHECKPOINTS_DIR}/ folder. Give {ACCEPTED_LOCATIONS}'
  )


def restore_checkpoint(
    path: str, step: int | None = None, dtype: Any = None, sharding: jax.sharding.Sharding | None = None
) -> RestoredCheckpoint:
  """The model, variables and remembered training facts of the checkpoint at `path`.

  Args:
    path: any of `ACCEPTED_LOCATIONS` (`resolve_location`).
    step: the step to read; None = the step folder's step, else the newest restorable one.
    dtype: compute dtype of the returned model (None = float32).
    sharding: where to place the arrays (default: replicated on the first device).

  Raises:
    CheckpointError: nothing restorable at `path`; the message names it and what to do.
  """
  location = resolve_location(path)
  if step is not None and location.step not in (None, step):
    raise CheckpointError(f'{path} is the folder of step {location.step}, not step {step}')
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  step = location.step if step is None else step
  with ocp.CheckpointManager(location.directory, item_handlers=_item_handlers()) as mngr:

    def restore(s):
      config = mngr.restore(s, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
      model = model_from_config(config, dtype)
      metadata = mngr.item_metadata(s)[STATE_ITEM]
      tree = metadata.tree if hasattr(metadata, 'tree') else metadata
      target = {'variables': _abstract(tree['variables'], sharding)}
      restored = mngr.restore(
          s,
          args=ocp.args.Composite(
              **{
                  STATE_ITEM: ocp.args.PyTreeRestore(
                      item=target,
                      restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                      partial_restore=True,
                  )
              }
          ),
      )
      return model, restored[STATE_ITEM]['variables'], config.get(TRAINING_KEY, {})

    if step is None:
      step, (model, variables, training) = restore_candidates(mngr, restore)
    else:
      try:
        model, variables, training = restore(step)
      except Exception as e:  # pylint: disable=broad-except  # orbax raises many types for missing or damaged files
        raise CheckpointError(
            f'step {step} in {location.directory} cannot be restored ({type(e).__name__}: {e}); '
            f'give another step folder, or {location.directory} for its newest readable step'
        ) from e
  return RestoredCheckpoint(model, variables, step, location, training.get('mano_dir'), training.get('input_size_px'))


def restore_variables(
    directory: str, step: int | None = None, dtype: Any = None, sharding: jax.sharding.Sharding | None = None
) -> tuple[DIR, dict, int]:
  """(model, variables, step) of `restore_checkpoint` (same arguments; `directory`: any accepted location)."""
  restored = restore_checkpoint(directory, step, dtype, sharding)
  return restored.model, restored.variables, restored.step


def mano_dir_choice(given: str | None, restored: RestoredCheckpoint, default: str, flag: str) -> tuple[str, str]:
  """(MANO folder, where the choice came from): `given`, else the checkpoint's own, else `default`.

  Args:
    given: the folder the user passed with `flag`; None when they did not.
    restored: the checkpoint; its `mano_dir` is used when `given` is None.
    default: the folder when neither names one.
    flag: the command-line flag that sets the folder, named in the source and in errors.

  Raises:
    ManoDirGoneError: the checkpoint's folder no longer exists (and `given` is None).
  """
  if given is not None:
    return given, f'given with {flag}'
  if restored.mano_dir is not None:
    if not os.path.isdir(restored.mano_dir):
      raise ManoDirGoneError(
          f'the checkpoint {restored.location.directory} was trained with the MANO folder {restored.mano_dir}, '
          f'which no longer exists; give {flag} with the folder that holds MANO_LEFT and MANO_RIGHT'
      )
    return restored.mano_dir, f'remembered by the checkpoint, as {flag} was not given'
  return default, f'the default: {flag} not given and the checkpoint remembers none'
