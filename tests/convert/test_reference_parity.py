"""The converted recipe weights reproduce the authors' PyTorch outputs (eval and train mode, losses), via compare_reference."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from dir_jax.convert import compare_reference, fixture


@pytest.fixture(scope='module')
def built(fixture_dir):
  return fixture.build(fixture_dir)


@pytest.fixture(scope='module')
def rows(fixture_dir, built):
  return compare_reference.compare_eval(fixture_dir, *built) + compare_reference.compare_train(fixture_dir, *built)


def test_every_reference_array_is_compared(rows, fixture_dir):
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  assert {r['key'] for r in rows if r['kind'] == 'eval'} == set(reference.files)
  assert len([r for r in rows if r['kind'] == 'mano']) == 12
  train = np.load(f'{fixture_dir}/train.npz')
  masks = set(fixture.reference_masks(train, 'train.'))
  assert len(masks) == 4
  assert {r['key'] for r in rows if r['kind'] == 'train'} == {k for k in train.files if k.startswith('train.')} | masks
  with open(f'{fixture_dir}/train_losses.json') as f:
    loss_names = set(json.load(f)) - {'__order__'}
  assert {r['key'] for r in rows if r['kind'] == 'loss'} == loss_names
  assert len(loss_names) == 42 + 1


def test_all_arrays_within_tolerance(rows):
  # Tolerances and their reasons are in compare_reference's docstring.
  failed = [(r['key'], r['abs'], r['rel'], r['tol']) for r in rows if not r['ok']]
  assert not failed, failed


def test_bone_masks_identical_and_nonempty(rows, fixture_dir):
  """No cell of the shared fixture flips (its smallest margin to a threshold is 6e-4 cells), so nothing is forced."""
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  masks = [r for r in rows if 'bone_mask' in r['key']]
  assert len(masks) == 8 and all(r['abs'] == 0 and r['ok'] for r in masks)
  assert all(reference[r['key']].any() for r in masks if r['kind'] == 'eval')
  assert all(r.get('judged', True) for r in rows)


def test_flipped_cell_is_reported_and_forced(fixture_dir, built, capsys):
  """A stage-2 threshold moved just past the fixture's nearest cell flips that cell in our masks.

  The flip is counted and named, the downstream arrays of our own forward are shown unjudged, and the
  forward with the reference's masks forced passes everything: the flip was the only difference.
  """
  model, variables, mano, images = built
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  dist = np.concatenate([reference[f'decoder.projecter_3.bone_dist_{h}'].ravel() for h in ('left', 'right')])
  nearest = dist[np.nanargmin(np.abs(dist - 2.0))]
  moved = nearest + np.sign(nearest - 2.0) * 1e-4  # the cell lands on the other side; no other cell is this close
  stages = (model.config.stages[0], dataclasses.replace(model.config.stages[1], threshold=float(moved)))
  nudged = model.clone(config=model.config.replace(stages=stages))
  rows = compare_reference.compare_eval(fixture_dir, nudged, variables, mano, images)
  masks = {r['key']: r for r in rows if 'bone_mask' in r['key']}
  assert sum(r['abs'] for r in masks.values()) == 1
  assert all(r['ok'] for r in masks.values())
  assert compare_reference.failures(rows) == []
  unjudged = [r for r in rows if not r.get('judged', True)]
  assert unjudged and all(r['kind'] == 'eval*' for r in unjudged)
  assert not all(r['ok'] for r in unjudged if r['key'] == 'seg')  # the flip changed our own forward downstream
  compare_reference.print_table(rows)
  out = capsys.readouterr().out
  assert '1 cell(s) differ from the reference mask' in out and 'decoder.projecter_3.bone_mask_' in out


def test_a_transposed_kernel_fails_naming_the_arrays(fixture_dir, built):
  """One 3x3 kernel with its spatial axes swapped (a plausible conversion slip) fails from that layer on."""
  model, variables, mano, images = built
  planted = jax.tree.map(lambda x: x, variables)
  conv = planted['params']['decoder']['conv_final']['0']
  conv['kernel'] = np.asarray(conv['kernel']).transpose(1, 0, 2, 3)
  failed = compare_reference.failures(compare_reference.compare_eval(fixture_dir, model, planted, mano, images))
  assert set(failed) == {'seg', 'dense'}, failed


def test_cli_exit_status(fixture_dir, capsys):
  # The training steps are compared by tests/convert/test_training_parity.py.
  assert compare_reference.main(['compare_reference', '--fixture', fixture_dir, '--notrain_steps']) == 0
  out = capsys.readouterr().out
  assert '218 passed, 0 failed' in out
