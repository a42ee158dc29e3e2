"""Factored plane fusion equals the dense conv over the planes: forward and every gradient, both projections."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from configs import tiny
from dir_jax.mano import load_mano_pair
from dir_jax.model import image_space
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.dir import DIR
from dir_jax.model.fusion import PlaneFusion, factored_plane_conv

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = (StageSpec(4, 'c3', 1.0), StageSpec(8, 'c2', 2.0), StageSpec(8, 'c2', 2.0))
NARROW = {
    k: tiny.get_config().model[k] for k in ('encoder_width', 'attention_dim', 'img_feat_dim', 'emb_dim', 'joint_dim')
}
PROJECTIONS = {
    'bone': (image_space.bone_coefficients, image_space.BONE_ENDS),
    'mfp': (image_space.joint_coefficients, image_space.JOINT_ENDS),
}


def _coefficients(projection, uv, size, threshold):
  coefficients, _ = PROJECTIONS[projection]
  coef, _ = coefficients(uv, size, threshold)
  return coef.reshape(size, size, *coef.shape[1:])


def _dense(projection, uv, feat, kernel, size, threshold):
  """The reference's way: planes (S, S, K*C), then a 'same' 3x3 conv."""
  ends = PROJECTIONS[projection][1]
  coef = _coefficients(projection, uv, size, threshold)
  planes = image_space.planes_from_coefficients(coef.reshape(size * size, *coef.shape[2:]), feat, ends)
  return lax.conv_general_dilated(
      planes.reshape(1, size, size, -1), kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )[0]


def _factored(projection, uv, feat, kernel, size, threshold):
  return factored_plane_conv(_coefficients(projection, uv, size, threshold), feat, kernel, PROJECTIONS[projection][1])


def _hand_uv(rng, spread=1.3):
  """21 joints spread over and beyond [-1, 1]: bones cross the grid edge, some joints lie outside."""
  return jnp.asarray(rng.uniform(-spread, spread, (21, 2)), jnp.float32)


def _edge_cases():
  """uv of: a hand spilling over the grid edge; a bone at exactly the threshold from a row of cell
  centres; a zero-length bone (the reference's NaN distances)."""
  rng = np.random.default_rng(0)
  spilling = _hand_uv(rng)
  at_threshold = np.array(_hand_uv(rng, 0.9))
  # S = 8, threshold 2: joints 0 and 1 on the line y = 5.5 cells, 2 cells from the centres of row 3.
  at_threshold[0] = [(1.5 / 8) * 2 - 1, (5.5 / 8) * 2 - 1]
  at_threshold[1] = [(6.5 / 8) * 2 - 1, (5.5 / 8) * 2 - 1]
  zero_length = np.array(_hand_uv(rng, 0.9))
  zero_length[6] = zero_length[5]  # bone 5 (joint 5 -> 6) has no length
  return {'spilling': spilling, 'at_threshold': jnp.asarray(at_threshold), 'zero_length': jnp.asarray(zero_length)}


def test_edge_cases_are_what_they_say():
  cases = _edge_cases()
  coef, distance = image_space.bone_coefficients(cases['at_threshold'], 8, 2.0)
  on_threshold = np.isclose(np.asarray(distance[:, 0]), 2.0, atol=0, rtol=0)
  assert on_threshold.sum() >= 4  # cell centres exactly 2 cells from bone 0 ...
  assert np.all(np.asarray(coef)[on_threshold, 0] == 0)  # ... are outside its mask (strict <)
  coef, distance = image_space.bone_coefficients(cases['zero_length'], 8, 2.0)
  assert np.all(np.isnan(distance[:, 5])) and np.all(coef[:, 5] == 0)
  coef, _ = image_space.bone_coefficients(cases['spilling'], 8, 2.0)
  assert np.any(np.abs(cases['spilling']) > 1) and np.any(coef > 0)


@pytest.mark.parametrize('projection', ['bone', 'mfp'])
@pytest.mark.parametrize('case', ['spilling', 'at_threshold', 'zero_length'])
def test_factored_equals_dense_forward_and_gradients(projection, case):
  size, threshold, channels, out = 8, 2.0, 8, 16
  num_planes = PROJECTIONS[projection][1].shape[0]
  rng = np.random.default_rng(1)
  uv = _edge_cases()[case]
  feat = jnp.asarray(rng.normal(size=(21, channels)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, num_planes * channels, out)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(size, size, out)), jnp.float32)

  dense = _dense(projection, uv, feat, kernel, size, threshold)
  factored = _factored(projection, uv, feat, kernel, size, threshold)
  scale = float(jnp.max(jnp.abs(dense)))
  assert scale > 0
  np.testing.assert_allclose(factored, dense, rtol=0, atol=1e-5 * scale)

  def loss(fn):
    return lambda uv, feat, kernel: jnp.sum(fn(projection, uv, feat, kernel, size, threshold) * cotangent)

  grads_dense = jax.grad(loss(_dense), argnums=(0, 1, 2))(uv, feat, kernel)
  grads_factored = jax.grad(loss(_factored), argnums=(0, 1, 2))(uv, feat, kernel)
  for name, g_dense, g_factored in zip(('uv', 'features', 'kernel'), grads_dense, grads_factored):
    chex.assert_tree_all_finite(g_factored)
    g_scale = float(jnp.max(jnp.abs(g_dense)))
    if name == 'uv' and projection == 'mfp':
      assert g_scale == 0  # masks only: the planes do not depend on uv differentiably
    else:
      assert g_scale > 0, name
    np.testing.assert_allclose(g_factored, g_dense, rtol=0, atol=1e-5 * max(g_scale, 1.0), err_msg=name)


def test_released_shapes_match():
  """Released widths (64 channels, 256 out, 20 bones of both hands = 2560 input channels) at S = 16."""
  size, threshold = 16, 1.0
  rng = np.random.default_rng(2)
  ends = np.concatenate([image_space.BONE_ENDS, image_space.BONE_ENDS + 21])
  uv = [_hand_uv(rng, 0.8), _hand_uv(rng, 0.8)]
  coef = jnp.concatenate([_coefficients('bone', u, size, threshold) for u in uv], axis=2)
  feat = jnp.asarray(rng.normal(size=(42, 64)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2560, 256)) * 0.02, jnp.float32)
  planes = image_space.planes_from_coefficients(coef.reshape(size * size, 40, 2), feat, ends)
  dense = lax.conv_general_dilated(
      planes.reshape(1, size, size, -1), kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )[0]
  factored = factored_plane_conv(coef, feat, kernel, ends)
  np.testing.assert_allclose(factored, dense, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(dense))))


@pytest.mark.parametrize('train', [False, True])
def test_plane_fusion_module_methods_share_parameters_and_outputs(train):
  size, batch, channels = 8, 3, 8
  rng = np.random.default_rng(3)
  ends = tuple(map(tuple, image_space.BONE_ENDS.tolist()))
  uv = jnp.asarray(rng.uniform(-1.2, 1.2, (batch, 2, 21, 2)), jnp.float32)
  coef = jax.vmap(jax.vmap(lambda u: _coefficients('bone', u, size, 2.0)))(uv)  # (B, 2, S, S, K, E)
  coef = jnp.moveaxis(coef, 1, 3)
  feat = jnp.asarray(rng.normal(size=(batch, 2, 21, channels)), jnp.float32)
  factored, dense = (PlaneFusion(16, ends, method) for method in ('factored', 'dense'))
  variables = factored.init(jax.random.PRNGKey(0), coef, feat, False)
  dense_variables = dense.init(jax.random.PRNGKey(0), coef, feat, False)
  chex.assert_trees_all_equal(variables, dense_variables)  # same names, shapes and initial values
  out_f, state_f = factored.apply(variables, coef, feat, train, mutable=['batch_stats'])
  out_d, state_d = dense.apply(variables, coef, feat, train, mutable=['batch_stats'])
  np.testing.assert_allclose(out_f, out_d, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(out_d))))
  chex.assert_trees_all_close(state_f, state_d, atol=1e-5, rtol=1e-5)


def test_plane_fusion_bfloat16_factored_close_to_dense():
  """bfloat16 compute: both methods round differently (planes vs per-tap products), both near float32."""
  size, batch, channels = 8, 2, 8
  rng = np.random.default_rng(4)
  ends = tuple(map(tuple, image_space.BONE_ENDS.tolist()))
  uv = jnp.asarray(rng.uniform(-1.2, 1.2, (batch, 2, 21, 2)), jnp.float32)
  coef = jnp.moveaxis(jax.vmap(jax.vmap(lambda u: _coefficients('bone', u, size, 2.0)))(uv), 1, 3)
  feat = jnp.asarray(rng.normal(size=(batch, 2, 21, channels)), jnp.float32)
  variables = PlaneFusion(16, ends).init(jax.random.PRNGKey(0), coef, feat, False)
  exact = PlaneFusion(16, ends, 'dense').apply(variables, coef, feat, False)
  scale = float(jnp.max(jnp.abs(exact)))
  for method in ('factored', 'dense'):
    out = PlaneFusion(16, ends, method, dtype=jnp.bfloat16).apply(variables, coef, feat, False)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), exact, rtol=0, atol=0.05 * scale, err_msg=method)


def test_unknown_method_is_refused():
  coef = jnp.zeros((1, 4, 4, 2, 20, 2))
  feat = jnp.zeros((1, 2, 21, 4))
  with pytest.raises(ValueError, match='fusion method'):
    PlaneFusion(4, tuple(map(tuple, image_space.BONE_ENDS.tolist())), 'sparse').init(
        jax.random.PRNGKey(0), coef, feat, False
    )


@pytest.fixture(scope='module')
def mano(fixture_mano_dir):
  return load_mano_pair(fixture_mano_dir)


def test_dir_model_factored_equals_dense(mano):
  """The whole tiny model, scanned 8x8 stages included: the same variables give the same outputs."""
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  factored, dense = (DIR(ModelConfig(stages=STAGES, fusion=fusion, **NARROW)) for fusion in ('factored', 'dense'))
  variables = jax.jit(lambda x: factored.init(jax.random.PRNGKey(0), x, mano))(images)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      variables, jax.eval_shape(lambda x: dense.init(jax.random.PRNGKey(0), x, mano), images)
  )
  apply = lambda model: jax.jit(lambda v, x: model.apply(v, x, mano, train=False))
  chex.assert_trees_all_close(apply(factored)(variables, images), apply(dense)(variables, images), atol=1e-5, rtol=1e-5)


def test_bone_geometry_stays_float32_in_bfloat16(mano):
  model = DIR(ModelConfig(stages=STAGES[:2], **NARROW), dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.bfloat16)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, mano), images)
  _, inter = jax.eval_shape(lambda v, x: model.apply(v, x, mano, mutable=['intermediates']), variables, images)
  distances = inter['intermediates']['decoder']['group_0']['projecter']['bone_dist_left_out']
  assert distances[0].dtype == jnp.float32


def test_forced_masks_replace_the_threshold(mano):
  """`forced_masks` equal to the thresholded masks change nothing; one flipped cell changes that stage on.

  Covers the unscanned first stage and the scanned group of two 8x8 stages (masks stacked on axis 0).
  """
  model = DIR(ModelConfig(stages=STAGES, **NARROW))
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, mano))(images)
  apply = jax.jit(lambda v, x: model.apply(v, x, mano, train=False, mutable=['intermediates']))
  outputs, inter = apply(variables, images)
  decoder = inter['intermediates']['decoder']
  forced = {}
  for g, group in enumerate(('group_0', 'group_1')):
    proj = decoder[group]['projecter']
    threshold = STAGES[g].threshold
    forced[group] = {'projecter': {h: proj[f'bone_dist_{h}_out'][0] < threshold for h in ('left', 'right')}}
  same, _ = apply(dict(variables, forced_masks={'decoder': forced}), images)
  chex.assert_trees_all_equal(same, outputs)

  # Flip one cell of the last stage (group_1, stacked index 1), right hand, example 0.
  mask = np.asarray(forced['group_1']['projecter']['right']).copy()
  mask[1, 0, 27, 3] = ~mask[1, 0, 27, 3]
  flipped = jax.tree.map(lambda x: x, forced)
  flipped['group_1']['projecter']['right'] = jnp.asarray(mask)
  changed, _ = apply(dict(variables, forced_masks={'decoder': flipped}), images)
  chex.assert_trees_all_equal(changed['stages'][:3], outputs['stages'][:3])
  for key in ('vis_img_feat', 'img_feat'):
    assert not np.array_equal(changed['stage_features'][2][key][0], outputs['stage_features'][2][key][0]), key
    np.testing.assert_array_equal(changed['stage_features'][2][key][1], outputs['stage_features'][2][key][1])


_FLOAT64_CHECK = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from configs import tiny
from dir_jax.convert.fixture import as_float64
from dir_jax.mano import load_mano_pair
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.dir import DIR
narrow = {k: tiny.get_config().model[k] for k in ('encoder_width', 'attention_dim', 'img_feat_dim', 'emb_dim', 'joint_dim')}
model = DIR(ModelConfig(stages=(StageSpec(4, 'c3', 1.0), StageSpec(8, 'c2', 2.0)), **narrow))
mano = load_mano_pair(sys.argv[1])
images = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3)), np.float32)
variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, mano))(images)
train = jax.jit(lambda v, x, m: model.apply(v, x, m, train=True, mutable=['batch_stats']))
evaluate = jax.jit(lambda v, x, m: model.apply(v, x, m, train=False)['stages'][0])
floating = lambda tree: [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
wide = as_float64((variables, images, mano))
# Numbers: the initial regressor in eval mode (no mask threshold, no batch statistics of 2 examples).
stage0_32, stage0_64 = floating(evaluate(variables, images, mano)), floating(evaluate(*wide))
print(json.dumps({'dtypes32': sorted({str(x.dtype) for x in floating(train(variables, images, mano))}),
                  'dtypes64': sorted({str(x.dtype) for x in floating(train(*wide))}),
                  'max_rel': max(float(np.max(np.abs(np.float64(a) - b)) / max(np.max(np.abs(b)), 1e-6))
                                 for a, b in zip(stage0_32, stage0_64))}))
"""


def test_float64_variables_compute_in_float64(fixture_mano_dir):
  """Under jax x64 (as `compare_reference --float64` sets it), float64 variables, inputs and MANO give
  float64 everywhere, batch statistics included (no float32 cast narrows them), float32 variables still
  compute in float32, and the initial stage agrees to float32 rounding (later stages of a random tiny
  model in train mode are too ill-conditioned to compare). A subprocess: x64 is process-wide."""
  env = dict(os.environ, JAX_ENABLE_X64='1', PYTHONPATH=REPO_ROOT)
  done = subprocess.run(
      [sys.executable, '-c', _FLOAT64_CHECK, fixture_mano_dir],
      env=env,
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=1800,
      check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['dtypes32'] == ['float32'] and result['dtypes64'] == ['float64'], result
  assert result['max_rel'] < 1e-4, result
