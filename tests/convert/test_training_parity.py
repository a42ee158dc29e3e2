"""Three AdamW steps of the converted recipe weights against the authors' own steps (compare_training).

One run of our steps is shared by every test; the planted errors are applied to its results (our
update or statistics changed as the error would change them), so each check is shown to fail with
the array named without compiling the train step again.
"""

import copy

import jax
import numpy as np
import pytest

from dir_jax.convert import compare_reference, compare_training, fixture


@pytest.fixture(scope='module')
def training(fixture_dir):
  model, variables, mano, images = fixture.build(fixture_dir)
  fx = compare_training.read_fixture(fixture_dir)
  return fx, compare_training.run_steps(fx, model, variables, mano, images), model


def _failures(training, **replaced):
  fx, ours, model = training
  planted = compare_training.OurSteps(**{**ours.__dict__, **replaced})
  return compare_reference.failures(compare_training.training_rows(fx, planted, model))


def test_three_steps_match_the_reference(training, capsys):
  fx, ours, model = training
  rows = compare_training.training_rows(fx, ours, model)
  compare_reference.print_table(rows)
  assert compare_reference.failures(rows) == [], capsys.readouterr().out
  keys = [r['key'] for r in rows if r.get('judged', True)]
  assert sum(k.startswith('learning rate') for k in keys) == 3
  assert sum(k.startswith('loss ') for k in keys) == 42 + 1 + 2 + 1  # step 1's terms and total, later totals, falling
  regular = len(fx.info['grad_norms']) - len(fx.info['no_grad']) - len(fx.info['zero_by_construction'])
  assert sum(r['key'].startswith('grad norm') and r['kind'] == 'step1' for r in rows) == regular
  assert sum(r['key'].startswith('grad norm') and r['kind'] == 'grad' for r in rows) == regular
  assert sum(k.startswith('update norm') for k in keys) == regular + 16  # and the e_0
  assert [k for k in keys if k.startswith('sum of all')] == [k for k in keys if k.startswith('sum of all norm scale')]
  assert len([k for k in keys if k.startswith('sum of all')]) == 1
  assert sum(k.startswith('decayed only') for k in keys) == 16
  assert sum(k.startswith('no gradient') for k in keys) == len(fx.info['no_grad'])
  assert any(k.endswith('running_var sum of squares') for k in keys)
  assert ours.totals[0] > ours.totals[1] > ours.totals[2]


def test_decay_left_out_for_biases_and_norm_scales_fails(training):
  """Named by the norm scales' update sum (biases sum to about 0: their decay is not measurable)."""
  _, ours, _ = training
  lr_wd = ours.learning_rates[0] * compare_training.reference_optimizer_config()[0].weight_decay
  after = copy.deepcopy(ours.after_step1)
  after['params'] = jax.tree_util.tree_map_with_path(
      lambda path, a, b: a + lr_wd * b if path[-1].key in ('bias', 'scale') else a,
      after['params'],
      ours.before['params'],
  )
  failed = _failures(training, after_step1=after)
  assert (
      [k for k in failed if not k.startswith('update norm')]
      == [k for k in failed if k.startswith('sum of all norm scale updates')]
      != []
  ), failed


def test_wrong_batchnorm_momentum_fails(training):
  """Running statistics updated with momentum 0.99 instead of PyTorch's 0.1 (Flax 0.9)."""
  _, ours, _ = training
  after = copy.deepcopy(ours.after_step1)
  after['batch_stats'] = jax.tree.map(lambda a, b: b + (a - b) * 0.1, after['batch_stats'], ours.before['batch_stats'])
  failed = _failures(training, after_step1=after)
  assert any(k.startswith('backbone.bn1.running_var') for k in failed), failed


def test_wrong_learning_rate_fails(training):
  """Updates 10 % too large: every parameter's update norm names it."""
  _, ours, _ = training
  after = copy.deepcopy(ours.after_step1)
  after['params'] = jax.tree.map(lambda a, b: b + (a - b) * 1.1, after['params'], ours.before['params'])
  failed = _failures(training, after_step1=after)
  assert 'update norm backbone.conv1.weight' in failed


def test_decay_applied_to_a_no_gradient_tensor_fails(training):
  """e_0 gets an exactly zero gradient: decayed three times, and not more."""
  _, ours, _ = training
  final = copy.deepcopy(ours.final)
  gcn = final['params']['decoder']['group_0']['projecter']['gcn_left']['gconv_layers']['0']['gconv']
  gcn['e_0'] = np.asarray(gcn['e_0']) * np.float32(1 - 5e-6)
  failed = _failures(training, final=final)
  assert 'decayed only decoder.projecter_4.gcn_left.gconv_layers.0.gconv.e_0' in failed, failed


def test_step_three_diverging_beyond_chaos_fails(training):
  _, ours, _ = training
  failed = _failures(training, totals=ours.totals[:2] + [ours.totals[2] * 1.3])
  assert 'loss total' in failed
