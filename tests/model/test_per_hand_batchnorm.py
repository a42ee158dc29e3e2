"""`per_hand_bn_stats` (docs/quirks.md#q15): per-hand running statistics in the modules shared by both hands.

Training mode is the same computation with or without the option; the running statistics of each hand
are updated by that hand's call only, and eval mode normalises each hand with its own slot.
"""

import functools
import json
import operator
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from dir_jax import checkpoint
from dir_jax.convert.torch_checkpoint import (
    IGNORED_PATTERNS,
    UNUSED_PATTERNS,
    blend_slots_into_shared,
    convert_state_dict,
    copy_shared_stats_to_slots,
    flax_location,
)
from dir_jax.mano import load_mano_pair
from dir_jax.model.dir import abstract_variables
from dir_jax.model.layers import BatchNorm

SHARED = ('global_pos_emb', 'proj_feat_emb')  # the modules called once per hand
GROUPS = ('group_0', 'group_1')  # tiny: a 4x4 stage (not scanned) and an 8x8 stage (a scan of length 1)
SIDES = ('left', 'right')
MOMENTUM = 0.9  # layers.BatchNorm: running = 0.9 running + 0.1 batch (PyTorch's momentum 0.1)


def _model(per_hand: bool):
  config = tiny.get_config().model
  config.per_hand_bn_stats = per_hand
  return checkpoint.model_from_config(config)


def _shared_bn(batch_stats, group, module):
  """The running statistics of a shared module's BatchNorm; leading stage axis in the scanned group."""
  stats = batch_stats['decoder'][group]['projecter'][module]['1']
  return {k: np.asarray(v[0] if group != 'group_0' else v) for k, v in stats.items()}


def _set_shared_bn(batch_stats, group, module, values):
  out = jax.tree.map(lambda x: x, batch_stats)  # a copy of the dict structure
  bn = out['decoder'][group]['projecter'][module]['1']
  for k, v in values.items():
    bn[k] = jnp.asarray(v)[None] if group != 'group_0' else jnp.asarray(v)
  return out


def _randomised(tree, seed):
  """Running statistics away from the init values: means N(0, 0.5^2), variances in [0.5, 2]."""
  leaves, treedef = jax.tree.flatten_with_path(tree)
  rng = np.random.default_rng(seed)
  new = [
      rng.normal(0, 0.5, v.shape).astype(np.float32)
      if path[-1].key.startswith('mean')
      else rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
      for path, v in leaves
  ]
  return jax.tree.unflatten(treedef, new)


@pytest.fixture(scope='module')
def mano(fixture_mano_dir):
  return load_mano_pair(fixture_mano_dir)


@pytest.fixture(scope='module')
def setup(mano):
  """Both models, the same parameters, and running statistics: the option-on model's left and right
  slots start from different values (the option-off model's single slot from the left's)."""
  off, on = _model(False), _model(True)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 64, 64, 3))
  variables = jax.jit(lambda x: off.init(jax.random.PRNGKey(0), x, mano))(images)
  variables = {'params': variables['params'], 'batch_stats': _randomised(variables['batch_stats'], 0)}
  template = jax.eval_shape(lambda x: on.init(jax.random.PRNGKey(0), x, mano), images)
  on_stats = copy_shared_stats_to_slots(variables, template)['batch_stats']
  for g, group in enumerate(GROUPS):
    for m, module in enumerate(SHARED):
      right = _randomised(_shared_bn(variables['batch_stats'], group, module), 10 + 2 * g + m)
      on_stats = _set_shared_bn(on_stats, group, module, {'mean_right': right['mean'], 'var_right': right['var']})
  return off, on, images, variables, {'params': variables['params'], 'batch_stats': on_stats}


def _captures_shared_bn_input(module, method_name):
  """The shared modules' first Dense: its outputs are their BatchNorm's inputs, one per hand call."""
  return method_name == '__call__' and module.name == '0' and getattr(module.parent, 'name', None) in SHARED


def _train_step(model, mano):
  def loss_fn(params, batch_stats, images):
    out, state = model.apply(
        {'params': params, 'batch_stats': batch_stats},
        images,
        mano,
        train=True,
        mutable=['batch_stats', 'intermediates'],
        capture_intermediates=_captures_shared_bn_input,
    )
    loss = sum(jnp.mean(jnp.square(x)) for x in jax.tree.leaves(out))
    return loss, (out, state)

  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


@pytest.fixture(scope='module')
def trained(setup, mano):
  off, on, images, off_vars, on_vars = setup
  return {
      per_hand: _train_step(model, mano)(v['params'], v['batch_stats'], images)
      for per_hand, model, v in ((False, off, off_vars), (True, on, on_vars))
  }


def test_config_field_round_trips_through_checkpoints():
  on = _model(True)
  assert on.config.per_hand_bn_stats and not _model(False).config.per_hand_bn_stats
  config = checkpoint.model_config_dict(on)
  assert config['per_hand_bn_stats'] is True
  assert checkpoint.model_from_config(config) == on
  del config['per_hand_bn_stats']  # a checkpoint written before the option restores with it off
  assert not checkpoint.model_from_config(config).config.per_hand_bn_stats


def test_only_the_shared_batchnorms_get_slots():
  off, on = abstract_variables(_model(False), 64), abstract_variables(_model(True), 64)
  paths = lambda tree: {jax.tree_util.keystr(p): v.shape for p, v in jax.tree.flatten_with_path(tree)[0]}
  assert paths(off['params']) == paths(on['params'])
  off_stats, on_stats = paths(off['batch_stats']), paths(on['batch_stats'])
  only_off = sorted(set(off_stats) - set(on_stats))
  only_on = sorted(set(on_stats) - set(off_stats))
  # 4 BatchNorms (2 modules x 2 stages): mean, var -> mean_left, var_left, mean_right, var_right.
  assert len(only_off) == 2 * 4 and len(only_on) == 4 * 4
  assert all(any(f"'{m}']['1']" in p for m in SHARED) for p in only_off + only_on)
  assert all(off_stats[p] == on_stats[p] for p in off_stats if p in on_stats)
  shared = on['batch_stats']['decoder']['group_1']['projecter']['proj_feat_emb']['1']
  assert set(shared) == {'mean_left', 'var_left', 'mean_right', 'var_right'} and shared['mean_left'].shape == (1, 16)


def test_train_mode_outputs_and_gradients_are_identical(trained):
  """Batch statistics are per call with or without slots: bit-identical loss, outputs, gradients."""
  (loss_off, (out_off, state_off)), grads_off = trained[False]
  (loss_on, (out_on, state_on)), grads_on = trained[True]
  assert np.isfinite(float(loss_off))
  np.testing.assert_array_equal(loss_on, loss_off)
  chex.assert_trees_all_equal(out_on, out_off)
  chex.assert_trees_all_equal(grads_on, grads_off)
  assert any(
      float(jnp.abs(g).max()) > 0
      for g in jax.tree.leaves(grads_off['decoder']['group_1']['projecter']['global_pos_emb'])
  )
  # The BatchNorm inputs of the shared modules are the same too, and so is every unshared statistic.
  chex.assert_trees_all_equal(state_on['intermediates'], state_off['intermediates'])
  strip = lambda stats: {k: v for k, v in stats.items() if k != 'decoder'}
  chex.assert_trees_all_equal(strip(state_on['batch_stats']), strip(state_off['batch_stats']))
  chex.assert_trees_all_equal(
      state_on['batch_stats']['decoder']['group_1']['skip_layer'],
      state_off['batch_stats']['decoder']['group_1']['skip_layer'],
  )


@pytest.mark.parametrize('group', GROUPS)
@pytest.mark.parametrize('module', SHARED)
def test_each_slot_is_updated_by_its_hand_only(setup, trained, group, module):
  """Running statistics by hand from the BatchNorm's captured inputs: each slot sees its hand's call;
  the option-off single slot is the blend of the left call's update followed by the right's."""
  _, _, _, off_vars, on_vars = setup
  (_, (_, state_on)), _ = trained[True]
  (_, (_, state_off)), _ = trained[False]
  calls = state_on['intermediates']['decoder'][group]['projecter'][module]['0']['__call__']
  assert len(calls) == 2  # left, then right

  def update(mean0, var0, x):
    x = np.asarray(x, np.float64)
    x = x[0] if group != 'group_0' else x  # scanned group: leading stage axis
    x = x.reshape(-1, x.shape[-1])
    n = x.shape[0]
    return (MOMENTUM * mean0 + (1 - MOMENTUM) * x.mean(0), MOMENTUM * var0 + (1 - MOMENTUM) * x.var(0) * n / (n - 1))

  before_on, after_on = _shared_bn(on_vars['batch_stats'], group, module), _shared_bn(
      state_on['batch_stats'], group, module
  )
  for side, x in zip(SIDES, calls):
    mean, var = update(before_on[f'mean_{side}'], before_on[f'var_{side}'], x)
    # float32 reductions against float64 numpy: rounding only.
    np.testing.assert_allclose(after_on[f'mean_{side}'], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after_on[f'var_{side}'], var, rtol=1e-5, atol=1e-6)
  assert np.abs(after_on['mean_left'] - after_on['mean_right']).max() > 1e-3

  before_off, after_off = _shared_bn(off_vars['batch_stats'], group, module), _shared_bn(
      state_off['batch_stats'], group, module
  )
  mean, var = update(*update(before_off['mean'], before_off['var'], calls[0]), calls[1])
  np.testing.assert_allclose(after_off['mean'], mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(after_off['var'], var, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def eval_fns(setup, mano):
  off, on, *_ = setup
  make = lambda model: jax.jit(lambda v, x: model.apply(v, x, mano, mutable=['intermediates']))
  return make(off), make(on)


def _sown(state, group, module):
  """(left, right) outputs a shared module sowed in eval mode."""
  left, right = state['intermediates']['decoder'][group]['projecter'][f'{module}_out']
  return np.asarray(left), np.asarray(right)


def test_eval_mode_normalises_each_hand_with_its_slot(setup, eval_fns):
  """Slots left = A, right = B: the first shared module's left output is the option-off model's with
  statistics A, its right output the option-off model's with statistics B."""
  _, _, images, off_vars, on_vars = setup
  eval_off, eval_on = eval_fns
  _, state_on = eval_on(on_vars, images)
  slots = _shared_bn(on_vars['batch_stats'], 'group_0', 'global_pos_emb')
  for i, side in enumerate(SIDES):
    stats = _set_shared_bn(
        off_vars['batch_stats'],
        'group_0',
        'global_pos_emb',
        {'mean': slots[f'mean_{side}'], 'var': slots[f'var_{side}']},
    )
    _, state_off = eval_off({'params': off_vars['params'], 'batch_stats': stats}, images)
    ours, theirs = _sown(state_on, 'group_0', 'global_pos_emb'), _sown(state_off, 'group_0', 'global_pos_emb')
    np.testing.assert_array_equal(ours[i], theirs[i])
    assert np.abs(ours[1 - i] - theirs[1 - i]).max() > 1e-3


@pytest.mark.parametrize('group', GROUPS)
@pytest.mark.parametrize('module', SHARED)
@pytest.mark.parametrize('side', SIDES)
def test_eval_output_of_a_hand_changes_only_with_its_slot(setup, eval_fns, group, module, side):
  _, _, images, _, on_vars = setup
  _, eval_on = eval_fns
  _, base = eval_on(on_vars, images)
  slots = _shared_bn(on_vars['batch_stats'], group, module)
  shifted = _set_shared_bn(
      on_vars['batch_stats'],
      group,
      module,
      {f'mean_{side}': slots[f'mean_{side}'] + 1.0, f'var_{side}': slots[f'var_{side}'] * 3.0},
  )
  _, changed = eval_on({'params': on_vars['params'], 'batch_stats': shifted}, images)
  i = SIDES.index(side)
  before, after = _sown(base, group, module), _sown(changed, group, module)
  assert np.abs(after[i] - before[i]).max() > 1e-3
  np.testing.assert_array_equal(after[1 - i], before[1 - i])


def test_slots_equal_to_the_blend_give_the_option_off_outputs(setup, eval_fns):
  """`copy_shared_stats_to_slots` (an option-off checkpoint loaded into the option-on model): same outputs."""
  _, _, images, off_vars, _ = setup
  eval_off, eval_on = eval_fns
  on_template = jax.eval_shape(lambda: {'params': off_vars['params'], 'batch_stats': setup[4]['batch_stats']})
  copied = copy_shared_stats_to_slots(off_vars, on_template)
  slots = _shared_bn(copied['batch_stats'], 'group_1', 'proj_feat_emb')
  np.testing.assert_array_equal(
      slots['mean_left'], _shared_bn(off_vars['batch_stats'], 'group_1', 'proj_feat_emb')['mean']
  )
  np.testing.assert_array_equal(
      slots['var_right'], _shared_bn(off_vars['batch_stats'], 'group_1', 'proj_feat_emb')['var']
  )
  out_off, _ = eval_off(off_vars, images)
  out_on, _ = eval_on(copied, images)
  chex.assert_trees_all_equal(out_on, out_off)


def test_blending_equal_slots_gives_back_the_option_off_variables(setup):
  """`blend_slots_into_shared` inverts `copy_shared_stats_to_slots`."""
  _, _, _, off_vars, _ = setup
  on_template = jax.eval_shape(lambda: {'params': off_vars['params'], 'batch_stats': setup[4]['batch_stats']})
  off_template = jax.eval_shape(lambda: off_vars)
  blended = blend_slots_into_shared(copy_shared_stats_to_slots(off_vars, on_template), off_template)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), blended, jax.device_get(off_vars))


def test_blend_is_the_shared_running_average_of_alternating_calls():
  """One set of statistics updated by the left call, then the right, at every step, against the two
  per-hand averages of the same batches blended: equal once the start is forgotten."""
  rng = np.random.default_rng(0)
  momentum, steps = 0.9, 400
  shared = {'mean': rng.normal(size=4), 'var': rng.uniform(0.5, 2, size=4)}
  slots = {f'{stat}_{side}': np.array(shared[stat]) for stat in shared for side in ('left', 'right')}
  level = {side: {'mean': rng.normal(size=4), 'var': rng.uniform(0.5, 2, size=4)} for side in ('left', 'right')}
  for _ in range(steps):
    for side in ('left', 'right'):
      batch = {stat: level[side][stat] + 0.01 * rng.normal(size=4) for stat in shared}
      for stat in shared:
        shared[stat] = momentum * shared[stat] + (1 - momentum) * batch[stat]
        slots[f'{stat}_{side}'] = momentum * slots[f'{stat}_{side}'] + (1 - momentum) * batch[stat]
  params = {'dense': {'kernel': np.ones((2, 2))}}
  blended = blend_slots_into_shared(
      {'params': params, 'batch_stats': {'bn': slots}}, {'params': params, 'batch_stats': {'bn': shared}}, momentum
  )
  for stat in shared:
    np.testing.assert_allclose(blended['batch_stats']['bn'][stat], shared[stat], atol=2e-3)
  np.testing.assert_array_equal(blended['params']['dense']['kernel'], params['dense']['kernel'])
  with pytest.raises(Exception, match='not in the model'):
    blend_slots_into_shared({'params': params, 'batch_stats': {'bn': slots}}, {'params': params, 'batch_stats': {}})


def _as_torch_state_dict(variables, model, fixture_dir):
  """The state dict the authors' code would hold for `variables` of an option-off model: every key of the
  fixture's (released) state dict, at this model's shapes, in PyTorch's layouts."""
  with open(f'{fixture_dir}/state_dict_shapes.json') as f:
    entries = json.load(f)
  skip = (
      IGNORED_PATTERNS
      + UNUSED_PATTERNS
      + tuple(rf'\.interaction\.STEblocks\.{b}\.' for b in range(4) if b not in model.config.transformer_blocks)
  )
  state = {}
  for key, shape, _ in entries:
    if any(re.search(p, key) for p in skip):
      continue
    collection, path, stacked = flax_location(key, len(shape), model.config.stages)
    value = np.asarray(functools.reduce(operator.getitem, path, variables[collection]))
    value = value if stacked is None else value[stacked]
    if path[-1] == 'kernel':  # Conv2d (kh,kw,I,O) -> (O,I,kh,kw); Conv1d k=1 (I,O) -> (O,I,1); Linear -> (O,I)
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else (value.T[:, :, None] if len(shape) == 3 else value.T)
    state[key] = value
  return state


def test_converted_checkpoint_gives_the_option_off_outputs(setup, eval_fns, fixture_dir):
  """The authors' layout (one blended statistic per shared module) converted for the option-on model:
  both slots hold the blend, and eval outputs equal the option-off model's exactly."""
  off, on, images, off_vars, _ = setup
  eval_off, eval_on = eval_fns
  state = _as_torch_state_dict(off_vars, off, fixture_dir)
  back, _ = convert_state_dict(state, abstract_variables(off, 64), off.config.stages)
  jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(off_vars))  # the test's inverse is right
  converted, report = convert_state_dict(state, abstract_variables(on, 64), on.config.stages)
  assert not report.missing
  for group in GROUPS:
    for module in SHARED:
      blend, slots = _shared_bn(off_vars['batch_stats'], group, module), _shared_bn(
          converted['batch_stats'], group, module
      )
      for stat in ('mean', 'var'):
        for side in SIDES:
          np.testing.assert_array_equal(slots[f'{stat}_{side}'], blend[stat])
  out_off, _ = eval_off(off_vars, images)
  out_on, _ = eval_on(converted, images)
  chex.assert_trees_all_equal(out_on, out_off)


def test_checkpoint_remembers_the_option(setup, tmp_path):
  _, on, _, _, on_vars = setup
  checkpoint.save_variables(str(tmp_path / 'ckpt'), on_vars, on)
  restored = checkpoint.restore_checkpoint(str(tmp_path / 'ckpt'))
  assert restored.model == on and restored.model.config.per_hand_bn_stats
  chex.assert_trees_all_equal(jax.device_get(restored.variables), jax.device_get(on_vars))


def test_batchnorm_slots():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 7, 3)) * 2 + 1
  bn = BatchNorm(slots=('left', 'right'))
  variables = bn.init(jax.random.PRNGKey(0), x, True, 'left')
  assert set(variables['batch_stats']) == {'mean_left', 'var_left', 'mean_right', 'var_right'}
  y, state = bn.apply(variables, x, True, 'right', mutable=['batch_stats'])
  stats = state['batch_stats']
  np.testing.assert_array_equal(stats['mean_left'], np.zeros(3))
  np.testing.assert_allclose(stats['mean_right'], 0.1 * np.asarray(x).reshape(-1, 3).mean(0), rtol=1e-5)
  y_plain, _ = BatchNorm().apply(
      {'params': variables['params'], 'batch_stats': {'mean': jnp.zeros(3), 'var': jnp.ones(3)}},
      x,
      True,
      mutable=['batch_stats'],
  )
  np.testing.assert_array_equal(y, y_plain)
  with pytest.raises(ValueError, match='slot must be one of'):
    bn.apply(variables, x, False)
  with pytest.raises(ValueError, match='without slots'):
    BatchNorm().init(jax.random.PRNGKey(0), x, False, 'left')
