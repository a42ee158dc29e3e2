"""DIR's loss terms against the reference fixture, PyTorch implementations, jit and grad."""

import functools
import json

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dir_jax import loss_settings, losses
from dir_jax.mano import load_mano_pair

HANDS = ('left', 'right')
KINDS = ('joint_uv', 'mesh_uv', 'joint_xyz', 'mesh_xyz')

# Fixture parity: the reference computed the terms in float32 from exactly these float32 arrays, so
# the only differences are float32 summation order (means over <= 6144 elements, ~1e-7 relative,
# measured <= 3e-7). 1e-4 leaves room for other reduction orders (e.g. GPU) and is still far below
# any real mistake (a wrong weight, delta, centring or downsampling changes a term by >= 1e-2).
FIXTURE_RTOL = 1e-4
# Per-function comparisons with PyTorch in float32 (oracles in float64 where stated): summation-order
# rounding over <= 2e4 elements.
TORCH_RTOL = 1e-5


def nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def maybe_jit(fn, use_jit, **jit_kwargs):
  return jax.jit(fn, **jit_kwargs) if use_jit else fn


@pytest.fixture(scope='module')
def faces(fixture_mano_dir):
  pair = load_mano_pair(fixture_mano_dir)
  return {'left': pair.left.faces, 'right': pair.right.faces}


@pytest.fixture(scope='module')
def train(fixture_dir):
  return dict(np.load(f'{fixture_dir}/train.npz'))


@pytest.fixture(scope='module')
def reference_losses(fixture_dir):
  with open(f'{fixture_dir}/train_losses.json') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def outputs(train):
  """The fixture's train-mode outputs in `dir_losses`' structure (NHWC heads)."""
  stages = []
  for s in range(3):
    stage = {f'{k}_{h}': train[f'train.stage{s}.pd_{k}_{h}'] for k in KINDS for h in HANDS}
    stage['offset'] = train[f'train.stage{s}.pd_offset']
    stages.append(stage)
  return {'stages': stages, 'seg': nhwc(train['train.seg']), 'dense': nhwc(train['train.dense'])}


def make_targets(train, full_resolution):
  """The fixture's targets; seg/dense at 256x256 or the reference's own 32x32 versions."""
  targets = {f'{k}_{h}': train[f'gt.{k}_{h}'] for k in ('joint_2d', 'mesh_2d', 'joint_3d', 'mesh_3d') for h in HANDS}
  targets.update({f'center_{h}': train[f'gt.center_{h}'][:, 0] for h in HANDS})
  if full_resolution:
    targets['seg'] = train['gt.seg'][:, 0].astype(np.int32)
    targets['dense'] = nhwc(train['gt.dense'])
  else:
    targets['seg'] = train['gt.seg_down'].astype(np.int32)
    targets['dense'] = nhwc(train['gt.dense_down'])
  return targets


def reference_config():
  config = loss_settings.default_loss_config()
  config.gt_center = 'reference'
  return config


# ----------------------------------------------------------------------------------- fixture parity


def test_downsampling_matches_reference_targets(train):
  seg = losses.downsample_seg_nearest(train['gt.seg'][:, 0].astype(np.int32), 32)
  np.testing.assert_array_equal(seg, train['gt.seg_down'])
  dense = losses.downsample_dense_bilinear(nhwc(train['gt.dense']), (32, 32))
  np.testing.assert_allclose(dense, nhwc(train['gt.dense_down']), rtol=0, atol=1e-6)


@pytest.mark.parametrize('full_resolution', [False, True])
def test_all_terms_match_reference(train, outputs, faces, reference_losses, full_resolution):
  terms = losses.dir_losses(
      outputs, make_targets(train, full_resolution), faces['left'], faces['right'], reference_config(), center_idx=0
  )
  assert list(terms) == reference_losses['__order__'] == losses.loss_term_names(3)
  for name, value in terms.items():
    np.testing.assert_allclose(value, reference_losses[name], rtol=FIXTURE_RTOL, err_msg=name)
  np.testing.assert_allclose(losses.total_loss(terms), reference_losses['__total__'], rtol=FIXTURE_RTOL)


def test_consistent_at_joint9_equals_reference(train, outputs, faces):
  """The fixture's center_* is GT joint 9, so 'consistent' centring at joint 9 gives the same terms."""
  targets = make_targets(train, full_resolution=False)
  config = loss_settings.default_loss_config()
  consistent = losses.dir_losses(outputs, targets, faces['left'], faces['right'], config, center_idx=9)
  reference = losses.dir_losses(outputs, targets, faces['left'], faces['right'], reference_config(), center_idx=0)
  for name in reference:
    np.testing.assert_allclose(consistent[name], reference[name], rtol=1e-6, err_msg=name)


# -------------------------------------------------------------- centring (docs/quirks.md#q1)


def perfect_outputs(train, num_stages=2):
  """Outputs equal to the GT as the network produces it: uv, and xyz centred at the wrist."""
  stage = {}
  for h in HANDS:
    for kind in ('joint', 'mesh'):
      stage[f'{kind}_uv_{h}'] = train[f'gt.{kind}_2d_{h}'][..., :2]
      stage[f'{kind}_xyz_{h}'] = train[f'gt.{kind}_3d_{h}'] - train[f'gt.joint_3d_{h}'][:, :1]
  stage['offset'] = (train['gt.joint_3d_right'][:, 0] - train['gt.joint_3d_left'][:, 0]) / 0.15
  return {'stages': [stage] * num_stages, 'seg': nhwc(train['train.seg']), 'dense': nhwc(train['train.dense'])}


def test_consistent_centring_zero_for_perfect_prediction(train, faces):
  outputs = perfect_outputs(train)
  targets = make_targets(train, full_resolution=False)
  consistent = losses.dir_losses(
      outputs, targets, faces['left'], faces['right'], loss_settings.default_loss_config(), center_idx=0
  )
  reference = losses.dir_losses(outputs, targets, faces['left'], faces['right'], reference_config(), center_idx=0)
  assert list(consistent) == losses.loss_term_names(2)
  for s in range(2):
    for name in (
        'joint_left_xyz',
        'joint_right_xyz',
        'mesh_left_xyz',
        'mesh_right_xyz',
        'offset',
        'joint_left_uv',
        'mesh_right_uv',
    ):
      assert float(consistent[f'{name}_{s}']) < 1e-9, name
    # Edges and face normals are translation invariant: zero up to float32 rounding in both modes.
    for name in ('edge_left', 'edge_right', 'normal_left', 'normal_right'):
      assert float(consistent[f'{name}_{s}']) < 1e-5, name
      assert float(reference[f'{name}_{s}']) < 1e-5, name
    # The reference's MCP centring penalises the same perfect prediction (the wrist-MCP vector).
    for name in ('joint_left_xyz', 'mesh_right_xyz', 'offset'):
      assert float(reference[f'{name}_{s}']) > 1e-3, name


def test_bad_config_raises(train, outputs, faces):
  config = loss_settings.default_loss_config()
  config.gt_center = 'mcp'
  with pytest.raises(ValueError, match='gt_center'):
    losses.dir_losses(outputs, make_targets(train, False), faces['left'], faces['right'], config, center_idx=0)


# ---------------------------------------------------------------------------------- jit and grad


def test_jit_and_grad_of_total(train, outputs, faces):
  targets = make_targets(train, full_resolution=True)
  config = reference_config()

  def total(out):
    return losses.total_loss(losses.dir_losses(out, targets, faces['left'], faces['right'], config, center_idx=0))

  eager = total(outputs)
  value, grads = jax.jit(jax.value_and_grad(total))(outputs)
  np.testing.assert_allclose(value, eager, rtol=1e-6)
  jitted_terms = jax.jit(lambda o: losses.dir_losses(o, targets, faces['left'], faces['right'], config, center_idx=0))(
      outputs
  )
  assert set(jitted_terms) == set(losses.loss_term_names(3))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), path


# ------------------------------------------------------------------------ per-function vs PyTorch


@pytest.mark.parametrize('use_jit', [False, True])
def test_huber_matches_torch(use_jit):
  rng = np.random.default_rng(0)
  # Differences on both sides of delta = 0.01.
  pred = rng.normal(size=(4, 50, 3)).astype(np.float32) * 0.02
  target = rng.normal(size=(4, 50, 3)).astype(np.float32) * 0.02
  ours = maybe_jit(losses.huber, use_jit)(pred, target)
  want = F.huber_loss(torch.tensor(pred), torch.tensor(target), delta=0.01)
  np.testing.assert_allclose(ours, want.item(), rtol=TORCH_RTOL)
  np.testing.assert_allclose(
      losses.huber(pred, target, 0.1),
      F.huber_loss(torch.tensor(pred), torch.tensor(target), delta=0.1).item(),
      rtol=TORCH_RTOL,
  )


def torch_edge_length(pred, gt, faces):
  """Mean |len_pred - len_gt| over face edges v0v1, v0v2, v1v2 (loss.py EdgeLengthLoss)."""

  def lengths(v):
    c = [v[:, faces[:, i]] for i in range(3)]
    return torch.stack([torch.sqrt(((c[a] - c[b]) ** 2).sum(-1) + 1e-12) for a, b in ((0, 1), (0, 2), (1, 2))])

  return (lengths(pred) - lengths(gt)).abs().mean()


def torch_normal_vector(pred, gt, faces):
  """Mean |cos| of unit predicted edges v1v0, v2v0, v2v1 with the unit GT face normal (loss.py NormalVectorLoss)."""
  p = [pred[:, faces[:, i]] for i in range(3)]
  g = [gt[:, faces[:, i]] for i in range(3)]
  normal = F.normalize(torch.cross(F.normalize(g[1] - g[0], dim=-1), F.normalize(g[2] - g[0], dim=-1), dim=-1), dim=-1)
  edges = [F.normalize(a - b, dim=-1) for a, b in ((p[1], p[0]), (p[2], p[0]), (p[2], p[1]))]
  return torch.stack([(e * normal).sum(-1).abs() for e in edges]).mean()


@pytest.mark.parametrize(
    'ours_fn,torch_fn', [(losses.edge_length_loss, torch_edge_length), (losses.normal_vector_loss, torch_normal_vector)]
)
def test_mesh_losses_match_torch(faces, ours_fn, torch_fn):
  rng = np.random.default_rng(1)
  gt = rng.normal(size=(2, 778, 3)).astype(np.float32)
  pred = (gt + 0.1 * rng.normal(size=gt.shape)).astype(np.float32)
  pred_t = torch.tensor(pred, requires_grad=True)
  want = torch_fn(pred_t, torch.tensor(gt), torch.tensor(faces['right'], dtype=torch.long))
  want.backward()
  value, grad = jax.value_and_grad(ours_fn)(pred, gt, faces['right'])
  np.testing.assert_allclose(value, want.item(), rtol=TORCH_RTOL)
  np.testing.assert_allclose(grad, pred_t.grad.numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shape,present', [((2, 32, 32), (0, 1, 2)), ((4, 48, 40), (0, 2))])
def test_weighted_cross_entropy_matches_torch(use_jit, shape, present):
  rng = np.random.default_rng(2)
  logits = rng.normal(size=shape + (3,)).astype(np.float32) * 3
  labels = rng.choice(present, size=shape).astype(np.int32)
  weights = (0.1, 0.45, 0.45)
  ours = maybe_jit(losses.weighted_cross_entropy, use_jit, static_argnums=2)(logits, labels, weights)
  want = F.cross_entropy(
      torch.tensor(logits).permute(0, 3, 1, 2), torch.tensor(labels, dtype=torch.long), weight=torch.tensor(weights)
  )
  np.testing.assert_allclose(ours, want.item(), rtol=TORCH_RTOL)


def torch_lovasz(scores, labels, classes):
  """Lovász-Softmax from its definition, in float64 (docs/architecture.md#losses), as a layer-cake sum.

  Per class: errors e = |1[y=c] - score_c| sorted descending; M_k = the k largest; Jaccard loss
  J(M) = 1 - |fg minus M| / |fg union M|. For e >= 0 the Lovász extension is
  sum_k (e_k - e_{k+1}) J(M_k) (e_{P+1} = 0). Mean over the classes used.
  """
  scores = scores.reshape(-1, scores.shape[-1]).double()
  labels = labels.reshape(-1)
  per_class = []
  for c in range(scores.shape[1]):
    fg = labels == c
    if classes == 'present' and not fg.any():
      continue
    errors, order = torch.sort((fg.double() - scores[:, c]).abs(), descending=True)
    fg_sorted = fg[order].double()
    num_fg = fg_sorted.sum()
    missed = num_fg - torch.cumsum(fg_sorted, 0)
    union = num_fg + torch.cumsum(1 - fg_sorted, 0)
    jaccard_loss = 1 - missed / union
    gaps = errors - torch.cat([errors[1:], errors.new_zeros(1)])
    per_class.append((gaps * jaccard_loss).sum())
  return torch.stack(per_class).mean()


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('case', ['random', 'ties', 'absent_class'])
@pytest.mark.parametrize('classes', ['present', 'all'])
def test_lovasz_matches_torch(use_jit, case, classes):
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 16, 16, 3)).astype(np.float32) * 2
  labels = rng.integers(0, 3, size=(2, 16, 16)).astype(np.int32)
  if case == 'ties':
    logits = np.round(logits).astype(np.float32)  # many equal errors: order among ties is arbitrary
  elif case == 'absent_class':
    labels = np.where(labels == 1, 2, labels)
  fn = maybe_jit(losses.lovasz_softmax, use_jit, static_argnames='classes')
  value, grad = jax.value_and_grad(fn)(logits, labels, classes=classes)
  logits_t = torch.tensor(logits, requires_grad=True)
  want = torch_lovasz(logits_t, torch.tensor(labels), classes)
  want.backward()
  np.testing.assert_allclose(value, want.item(), rtol=TORCH_RTOL)
  if case != 'ties':  # at ties the loss is not differentiable: each sort order gives a subgradient
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), rtol=1e-5, atol=1e-9)
  if case == 'absent_class':
    # Class 1 is absent: 'all' adds its max error |logit_1| to the average, 'present' skips it.
    other = losses.lovasz_softmax(logits, labels, classes='all' if classes == 'present' else 'present')
    assert abs(float(value) - float(other)) > 1e-3
    if classes == 'present':
      assert np.all(np.asarray(grad)[..., 1] == 0)


def test_lovasz_on_probabilities_switch(train, outputs, faces):
  targets = make_targets(train, full_resolution=False)
  config = reference_config()
  config.lovasz_input = 'probabilities'
  terms = losses.dir_losses(outputs, targets, faces['left'], faces['right'], config, center_idx=0)
  want = losses.lovasz_softmax(jax.nn.softmax(outputs['seg'], axis=-1), targets['seg']) * 0.1
  np.testing.assert_allclose(terms['lovasz'], want, rtol=1e-6)


@pytest.mark.parametrize(
    'in_hw,out_hw', [((256, 256), (32, 32)), ((20, 30), (7, 11)), ((5, 6), (9, 13)), ((12, 12), (12, 12))]
)
def test_downsampling_matches_torch(in_hw, out_hw):
  rng = np.random.default_rng(4)
  seg = rng.integers(0, 3, size=(2,) + in_hw).astype(np.int32)
  want_seg = F.interpolate(torch.tensor(seg, dtype=torch.float32)[:, None], out_hw, mode='nearest')
  np.testing.assert_array_equal(losses.downsample_seg_nearest(seg, out_hw), want_seg[:, 0].long().numpy())
  dense = rng.uniform(size=(2,) + in_hw + (3,)).astype(np.float32)
  fn = jax.jit(functools.partial(losses.downsample_dense_bilinear, size=out_hw))
  want_dense = F.interpolate(torch.tensor(dense).permute(0, 3, 1, 2), out_hw, mode='bilinear', align_corners=False)
  np.testing.assert_allclose(fn(dense), want_dense.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-6)
