"""Orbax checkpoint layout: model config round trip, partial restore of variables, damaged steps skipped."""

import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest

from dir_jax import checkpoint
from dir_jax.model.dir import DIR, StageSpec


def _variables(value):
  return {'params': {'layer': {'kernel': jnp.full((4, 3), value)}}, 'batch_stats': {'layer': {'mean': jnp.zeros(3)}}}


def test_model_config_round_trip():
  model = DIR(stages=(StageSpec(16, 'c3', 1.0), StageSpec(32, 'c2', 2.0), StageSpec(32, 'c2', 2.0)),
              projection='mfp', use_gcn=False, transformer_blocks=(0, 1, 2, 3), center_idx=9)
  assert checkpoint.model_from_config(checkpoint.model_config_dict(model)) == model


def test_training_state_restores_variables_only(tmp_path):
  model = DIR(projection='sfp')
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
