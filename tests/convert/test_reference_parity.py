"""The converted recipe weights reproduce the authors' PyTorch outputs (eval and train mode, losses), via compare_reference."""

import json

import numpy as np
import pytest

from dir_jax.convert import compare_reference


@pytest.fixture(scope='module')
def rows(fixture_dir):
  model, variables, mano, images = compare_reference.build(fixture_dir)
  outputs, inter = compare_reference.run_eval(model, variables, mano, images)
  ours = compare_reference.eval_arrays(outputs, inter, model)
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  rows = compare_reference.compare(ours, reference, 'eval')
  rows += compare_reference.compare(compare_reference.mano_case_arrays(fixture_dir),
                                    np.load(f'{fixture_dir}/mano_cases.npz'), 'mano')
  rows += compare_reference.compare_train(fixture_dir, model, variables, mano, images)
  return rows


def test_every_reference_array_is_compared(rows, fixture_dir):
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  assert {r['key'] for r in rows if r['kind'] == 'eval'} == set(reference.files)
  assert len([r for r in rows if r['kind'] == 'mano']) == 12
  train = np.load(f'{fixture_dir}/train.npz')
  assert {r['key'] for r in rows if r['kind'] == 'train'} == {k for k in train.files if k.startswith('train.')}
  with open(f'{fixture_dir}/train_losses.json') as f:
    loss_names = set(json.load(f)) - {'__order__'}
  assert {r['key'] for r in rows if r['kind'] == 'loss'} == loss_names
  assert len(loss_names) == 42 + 1


def test_all_arrays_within_tolerance(rows):
  # Tolerances and their reasons are in compare_reference's docstring.
  failed = [(r['key'], r['abs'], r['rel'], r['tol']) for r in rows if not r['ok']]
  assert not failed, failed


def test_bone_masks_identical_and_nonempty(rows, fixture_dir):
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  masks = [r for r in rows if 'bone_mask' in r['key']]
  assert len(masks) == 4 and all(r['abs'] == 0 for r in masks)
  assert all(reference[r['key']].any() for r in masks)


def test_cli_exit_status(fixture_dir, capsys):
  assert compare_reference.main(['--fixture', fixture_dir]) == 0
  out = capsys.readouterr().out
  assert '214 passed, 0 failed' in out
