"""Converting the authors' checkpoint for a model with `per_hand_bn_stats` (docs/quirks.md#q15).

The checkpoint has one blended running statistic per shared module; it fills both hands' slots, and
every other variable converts as without the option. (That the converted model's eval outputs equal
the option-off model's is checked on the tiny model in tests/model/test_per_hand_batchnorm.py.)
"""

import jax
import numpy as np
import pytest

from dir_jax.convert import fixture
from dir_jax.convert.torch_checkpoint import ConversionError, convert_state_dict, copy_shared_stats_to_slots
from dir_jax.model.config import ModelConfig
from dir_jax.model.dir import DIR, abstract_variables

SHARED_BN = [
    (f'decoder.projecter_{suffix}.{module}.1', group, stacked)
    for suffix, group, stacked in fixture.RELEASED_GROUPS
    for module in ('global_pos_emb', 'proj_feat_emb')
]


@pytest.fixture(scope='module')
def converted(fixture_dir):
  weights = fixture.recipe_weights(fixture_dir)
  out = {}
  for per_hand in (False, True):
    model = DIR(ModelConfig(per_hand_bn_stats=per_hand))
    template = abstract_variables(model)
    variables, report = convert_state_dict(weights, template, model.config.stages)
    out[per_hand] = (template, variables, report)
  return weights, out


def _flat(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree.flatten_with_path(tree)[0]}


def test_the_blend_fills_both_slots(converted):
  weights, out = converted
  _, on, report_on = out[True]
  _, off, report_off = out[False]
  assert report_on.loaded == report_off.loaded and report_on.missing == []
  for prefix, group, stacked in SHARED_BN:
    module = prefix.split('.')[2]
    stats = on['batch_stats']['decoder'][group]['projecter'][module]['1']
    assert set(stats) == {'mean_left', 'var_left', 'mean_right', 'var_right'}
    for stat in ('mean', 'var'):
      blend = weights[f'{prefix}.running_{stat}']
      assert np.abs(blend).max() > 0
      for side in ('left', 'right'):
        np.testing.assert_array_equal(stats[f'{stat}_{side}'][0] if stacked else stats[f'{stat}_{side}'], blend)


def test_everything_else_converts_as_without_the_option(converted):
  _, out = converted
  on, off = _flat(out[True][1]), _flat(out[False][1])
  assert set(on) - set(off) and set(off) - set(on)
  for key in set(on) & set(off):
    np.testing.assert_array_equal(on[key], off[key], err_msg=key)
  assert all('global_pos_emb' in k or 'proj_feat_emb' in k for k in set(on) ^ set(off))


def test_copy_into_slots_equals_conversion(converted):
  """An option-off checkpoint of ours (here: the option-off conversion) copied into the slots is the same
  as converting the authors' checkpoint with the option on."""
  _, out = converted
  on_template, on, _ = out[True]
  copied = copy_shared_stats_to_slots(out[False][1], on_template)
  jax.tree.map(np.testing.assert_array_equal, copied, on)
  # Variables already with slots pass through.
  jax.tree.map(np.testing.assert_array_equal, copy_shared_stats_to_slots(on, on_template), on)


def test_copy_refuses_variables_of_another_model(converted):
  _, out = converted
  on_template, _, _ = out[True]
  variables = out[False][1]
  broken = {'params': variables['params'], 'batch_stats': dict(variables['batch_stats'])}
  del broken['batch_stats']['init_regressor']
  with pytest.raises(ConversionError, match='batch_stats/init_regressor/.* missing'):
    copy_shared_stats_to_slots(broken, on_template)
  other = abstract_variables(DIR(ModelConfig(emb_dim=64, per_hand_bn_stats=False)))
  with pytest.raises(ConversionError, match=r'has shape \(64,\), expected \(128,\)'):
    copy_shared_stats_to_slots(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), other), on_template)


def test_per_hand_bn_stats_default_is_off():
  assert not ModelConfig().per_hand_bn_stats and not DIR().config.per_hand_bn_stats
