"""Refinement stages: a scanned group equals the same stages run one by one; jit equals eager."""

import chex
import jax
import jax.numpy as jnp
import pytest

from configs import tiny
from dir_jax.mano import load_mano_pair
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.dir import DIR, stage_groups

# 64x64 input keeps the tests small: c4 is 2x2, c3 4x4, c2 8x8; and narrow layers (as configs/tiny.py).
STAGES = (StageSpec(4, 'c3', 1.0), StageSpec(8, 'c2', 2.0), StageSpec(8, 'c2', 2.0))
NARROW = {
    k: tiny.get_config().model[k] for k in ('encoder_width', 'attention_dim', 'img_feat_dim', 'emb_dim', 'joint_dim')
}


def test_stage_groups():
  assert stage_groups(STAGES) == [[0], [1, 2]]
  assert stage_groups(STAGES, scan=False) == [[0], [1], [2]]
  released = (StageSpec(16, 'c3', 1.0), StageSpec(32, 'c2', 2.0))
  assert stage_groups(released) == [[0], [1]]
  assert stage_groups(released + (StageSpec(32, 'c2', 2.0),) * 2) == [[0], [1, 2, 3]]


@pytest.fixture(scope='module')
def mano(fixture_mano_dir):
  return load_mano_pair(fixture_mano_dir)


def _split_group(tree):
  """group_1 with 2 stacked stages -> group_1 and group_2 with one stacked stage each."""
  dec = dict(tree['decoder'])
  stacked = dec.pop('group_1')
  dec['group_1'] = jax.tree.map(lambda x: x[0:1], stacked)
  dec['group_2'] = jax.tree.map(lambda x: x[1:2], stacked)
  return {**tree, 'decoder': dec}


@pytest.mark.parametrize('train', [False, True])
def test_scan_equals_separate_stages(mano, train):
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  scanned = DIR(ModelConfig(stages=STAGES, **NARROW))
  separate = DIR(ModelConfig(stages=STAGES, scan_stages=False, **NARROW))
  variables = jax.jit(lambda x: scanned.init(jax.random.PRNGKey(0), x, mano))(images)
  assert variables['params']['decoder']['group_1']['projecter']['regressor']['offset']['kernel'].shape[0] == 2
  split = {k: _split_group(v) for k, v in variables.items()}
  chex.assert_trees_all_equal_shapes(
      split, jax.eval_shape(lambda x: separate.init(jax.random.PRNGKey(0), x, mano), images)
  )
  apply = lambda model: jax.jit(lambda v, x: model.apply(v, x, mano, train=train, mutable=['batch_stats']))
  out_a, state_a = apply(scanned)(variables, images)
  out_b, state_b = apply(separate)(split, images)
  # Same arithmetic, different XLA fusion: eval mode agrees to float32 rounding; train mode normalises
  # with batch statistics over 2 examples, which amplifies that rounding ~100x (docs/quirks.md#q28).
  tol = 1e-3 if train else 1e-5
  chex.assert_trees_all_close(out_a, out_b, atol=tol, rtol=tol)
  if train:
    chex.assert_trees_all_close(_split_group(state_a['batch_stats']), state_b['batch_stats'], atol=tol, rtol=tol)
  assert len(out_a['stages']) == 4
  assert out_a['seg'].shape == (2, 8, 8, 3)


def test_jit_and_eager_agree(mano):
  model = DIR(ModelConfig(stages=STAGES[:2], **NARROW))
  images = jax.random.normal(jax.random.PRNGKey(2), (1, 64, 64, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, mano))(images)
  apply = lambda v, x: model.apply(v, x, mano)
  chex.assert_trees_all_close(apply(variables, images), jax.jit(apply)(variables, images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('projection', ['mfp', 'sfp', 'mhp'])
def test_projection_variants_and_ablations(mano, projection):
  images = jnp.zeros((1, 64, 64, 3))
  model = DIR(
      ModelConfig(
          stages=STAGES[:2], projection=projection, use_gcn=projection != 'sfp', use_transformer=projection != 'mhp'
      )
  )
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, mano), images)
  fusion_in = variables['params']['decoder']['group_0']['projecter']['fusion']['0']['kernel'].shape[2]
  assert fusion_in == {'mfp': 2 * 21 * 64, 'sfp': 2 * 64, 'mhp': 2 * 21}[projection]
  proj = variables['params']['decoder']['group_0']['projecter']
  assert ('gcn_left' in proj) == (projection != 'sfp')
  assert ('interaction' in proj) == (projection != 'mhp')
