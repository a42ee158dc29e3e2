"""Orbax checkpoint layout: model config round trip, partial restore of variables, damaged steps skipped,
every location a user may give, and what a checkpoint remembers of its training run."""

import dataclasses
import logging
import os

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dir_jax import checkpoint
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.dir import DIR


def _variables(value):
  return {'params': {'layer': {'kernel': jnp.full((4, 3), value)}}, 'batch_stats': {'layer': {'mean': jnp.zeros(3)}}}


def test_model_config_round_trip():
  model = DIR(
      ModelConfig(
          stages=(StageSpec(16, 'c3', 1.0), StageSpec(32, 'c2', 2.0), StageSpec(32, 'c2', 2.0)),
          projection='mfp',
          use_gcn=False,
          transformer_blocks=(0, 1, 2, 3),
          center_idx=9,
          per_hand_bn_stats=True,
          camera_scale_init=9.0,
          fusion='dense',
      )
  )
  stored = checkpoint.model_config_dict(model)
  assert checkpoint.model_from_config(stored) == model
  # Every ModelConfig field is stored: none can be dropped from a checkpoint.
  assert set(stored) == {field.name for field in dataclasses.fields(ModelConfig)}


def test_model_config_refuses_unknown_fields():
  with pytest.raises(ValueError, match=r"unknown model config fields \['use_gnc'\]"):
    checkpoint.model_from_config({'stages': [[16, 'c3', 1.0]], 'use_gnc': False})
  with pytest.raises(ValueError, match='projection must be one of'):
    ModelConfig(projection='bones')


def test_model_config_of_an_older_checkpoint_takes_defaults():
  # Written before per_hand_bn_stats and fusion existed, with its training facts: the defaults fill in.
  stored = {
      'stages': [[16, 'c3', 1.0], [32, 'c2', 2.0]],
      'center_idx': 0,
      'projection': 'bone',
      'transformer_blocks': [1, 2, 3],
      checkpoint.TRAINING_KEY: {'mano_dir': '/m', 'input_size_px': 256},
  }
  assert checkpoint.model_from_config(stored) == DIR()


def test_training_state_restores_variables_only(tmp_path):
  model = DIR(ModelConfig(projection='sfp'))
  with checkpoint.manager(str(tmp_path), enable_async=False) as mngr:
    state = {'variables': _variables(2.0), 'opt_state': {'mu': jnp.ones(7)}, 'step': jnp.asarray(5)}
    mngr.save(5, args=checkpoint.save_args(state, model))
  restored, variables, step = checkpoint.restore_variables(str(tmp_path))
  assert restored == model and step == 5
  assert set(variables) == {'params', 'batch_stats'}
  np.testing.assert_array_equal(variables['params']['layer']['kernel'], np.full((4, 3), 2.0))


def _damage(step_dir):
  """Truncates every data file of the step's state item."""
  for root, _, files in os.walk(os.path.join(step_dir, checkpoint.STATE_ITEM)):
    for name in files:
      if name not in ('commit_success.txt',):
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'\0')


def test_damaged_latest_step_falls_back_with_a_warning(tmp_path, caplog):
  model = DIR()
  checkpoint.save_variables(str(tmp_path), _variables(1.0), model, step=1)
  checkpoint.save_variables(str(tmp_path), _variables(2.0), model, step=2)
  _damage(str(tmp_path / '2'))
  with caplog.at_level(logging.WARNING):
    _, variables, step = checkpoint.restore_variables(str(tmp_path))
  assert step == 1
  np.testing.assert_array_equal(variables['params']['layer']['kernel'], np.full((4, 3), 1.0))
  assert any('step 2' in r.getMessage() and 'cannot be restored' in r.getMessage() for r in caplog.records)


def test_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='checkpoint directory not found'):
    checkpoint.restore_variables(str(tmp_path / 'nope'))
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(checkpoint.CheckpointError, match='no checkpoint steps'):
    checkpoint.restore_variables(str(tmp_path / 'empty'))


# ------------------------------------------------------------------------------------------------
# Checkpoint locations a user may give


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A train.py workdir: checkpoints/ holds steps 1 and 2 (kernels 1.0, 2.0), best/ holds step 2."""
  run = tmp_path_factory.mktemp('run')
  model = DIR(ModelConfig(projection='sfp'))
  for directory, step in (('checkpoints', 1), ('checkpoints', 2), ('best', 2)):
    checkpoint.save_variables(str(run / directory), _variables(float(step)), model, step=step)
  return run


@pytest.mark.parametrize('form', ['', 'checkpoints', 'checkpoints/2', 'best', 'best/2', 'best/2/'])
def test_every_location_form_restores_the_same_checkpoint(workdir, form):
  restored = checkpoint.restore_checkpoint(os.path.join(str(workdir), form))
  assert restored.model == DIR(ModelConfig(projection='sfp')) and restored.step == 2
  np.testing.assert_array_equal(restored.variables['params']['layer']['kernel'], np.full((4, 3), 2.0))


def test_a_workdir_means_its_checkpoints_and_says_so(workdir):
  location = checkpoint.resolve_location(str(workdir))
  assert location.directory == str(workdir / 'checkpoints') and location.step is None
  assert 'checkpoints/' in location.description and str(workdir / 'best') in location.description


def test_a_step_folder_restores_that_step(workdir):
  _, variables, step = checkpoint.restore_variables(str(workdir / 'checkpoints' / '1'))
  assert step == 1
  np.testing.assert_array_equal(variables['params']['layer']['kernel'], np.full((4, 3), 1.0))
  with pytest.raises(checkpoint.CheckpointError, match='folder of step 1, not step 2'):
    checkpoint.restore_variables(str(workdir / 'checkpoints' / '1'), step=2)


def test_a_damaged_step_folder_is_named_not_replaced(tmp_path):
  checkpoint.save_variables(str(tmp_path), _variables(1.0), DIR(), step=1)
  checkpoint.save_variables(str(tmp_path), _variables(2.0), DIR(), step=2)
  _damage(str(tmp_path / '2'))
  with pytest.raises(checkpoint.CheckpointError, match=f'step 2 in {tmp_path} cannot be restored'):
    checkpoint.restore_variables(str(tmp_path / '2'))


@pytest.mark.parametrize('kind', ['missing', 'file', 'unrelated folder', 'empty step-like folder'])
def test_a_path_that_is_no_checkpoint_location_is_named_with_the_accepted_forms(tmp_path, kind):
  path = {
      'missing': tmp_path / 'nope',
      'file': tmp_path / 'notes.txt',
      'unrelated folder': tmp_path / 'photos',
      'empty step-like folder': tmp_path / '1200',
  }[kind]
  if kind == 'file':
    path.write_text('')
  elif kind != 'missing':
    (path / 'sub').mkdir(parents=True)
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.restore_checkpoint(str(path))
  message = str(error.value)
  assert str(path) in message and 'RUN/best/1200' in message and 'export_orbax' in message


# ------------------------------------------------------------------------------------------------
# What a checkpoint remembers of its training run


def test_training_facts_are_remembered(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  checkpoint.save_variables('ckpt', _variables(1.0), DIR(), training=checkpoint.training_facts('mano', 128))
  restored = checkpoint.restore_checkpoint(str(tmp_path / 'ckpt'))
  assert restored.mano_dir == str(tmp_path / 'mano') and restored.input_size_px == 128


def test_a_checkpoint_written_before_training_facts_restores(tmp_path):
  model = DIR(ModelConfig(projection='sfp'))
  with checkpoint.manager(str(tmp_path), enable_async=False) as mngr:  # the layout before 'training' was recorded
    mngr.save(
        3,
        args=ocp.args.Composite(
            **{
                checkpoint.STATE_ITEM: ocp.args.PyTreeSave({'variables': _variables(3.0)}),
                checkpoint.CONFIG_ITEM: ocp.args.JsonSave(checkpoint.model_config_dict(model)),
            }
        ),
    )
  restored = checkpoint.restore_checkpoint(str(tmp_path))
  assert restored.model == model and restored.step == 3
  assert restored.mano_dir is None and restored.input_size_px is None
  np.testing.assert_array_equal(restored.variables['params']['layer']['kernel'], np.full((4, 3), 3.0))
  assert checkpoint.mano_dir_choice(None, restored, 'mano', '--mano_dir') == (
      'mano',
      'the default: --mano_dir not given and the checkpoint remembers none',
  )


def test_mano_folder_choice(tmp_path):
  (tmp_path / 'mano').mkdir()
  location = checkpoint.CheckpointLocation(str(tmp_path / 'ckpt'), None, '')
  remembered = checkpoint.RestoredCheckpoint(DIR(), {}, 0, location, str(tmp_path / 'mano'), 64)
  assert checkpoint.mano_dir_choice('given', remembered, 'mano', '--mano_dir') == ('given', 'given with --mano_dir')
  assert checkpoint.mano_dir_choice(None, remembered, 'mano', '--mano_dir') == (
      str(tmp_path / 'mano'),
      'remembered by the checkpoint, as --mano_dir was not given',
  )
  gone = dataclasses.replace(remembered, mano_dir=str(tmp_path / 'moved'))
  with pytest.raises(checkpoint.ManoDirGoneError) as error:
    checkpoint.mano_dir_choice(None, gone, 'mano', '--config.mano_dir')
  assert str(tmp_path / 'moved') in str(error.value) and 'give --config.mano_dir' in str(error.value)
