"""The JAX MANO layers against the reference fixture, smplx, finite differences, jit and bfloat16."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dir_jax.mano import constants
from dir_jax.mano import gt_mano, load_mano, load_mano_pair, network_mano, rotation
from dir_jax.mano.asset import find_mano_file

# MANO joint m sits at position MANO16_IN_21[m] of the 21-joint order.
MANO16_IN_21 = [constants.REORDER_TO_21.index(m) for m in range(16)]


@pytest.fixture(scope='module')
def cases(fixture_dir):
  return dict(np.load(f'{fixture_dir}/mano_cases.npz'))


@pytest.fixture(scope='module')
def pair(fixture_mano_dir):
  return load_mano_pair(fixture_mano_dir)


# float32 parity: the reference ran in float32 on CPU; vertices are ~0.1 m, so 1e-6 m is ~1e-5
# relative, well above float32 rounding of the chain (~1e-7 relative) and far below any real error.
PARITY_ATOL_M = 1e-6


@pytest.mark.parametrize('side', ['left', 'right'])
@pytest.mark.parametrize('center_idx,key', [(None, 'manopth'), (0, 'manopth_center0')])
def test_network_layer_matches_reference(pair, cases, side, center_idx, key):
  pose = np.concatenate([cases['case.six_d'], cases['case.pca']], axis=1)
  verts, joints = network_mano(pair[side], jnp.asarray(pose), jnp.asarray(cases['case.betas']), center_idx=center_idx)
  np.testing.assert_allclose(verts, cases[f'{key}.{side}.verts'], atol=PARITY_ATOL_M, rtol=0)
  np.testing.assert_allclose(joints, cases[f'{key}.{side}.joints'], atol=PARITY_ATOL_M, rtol=0)


@pytest.mark.parametrize('side', ['left', 'right'])
def test_gt_layer_matches_reference(pair, cases, side):
  verts, joints = gt_mano(
      pair[side],
      jnp.asarray(cases['case.root_rotmat']),
      jnp.asarray(cases['case.pca']),
      jnp.asarray(cases['case.betas']),
      jnp.asarray(cases['case.trans']),
  )
  np.testing.assert_allclose(verts, cases[f'intaghand.{side}.verts'], atol=PARITY_ATOL_M, rtol=0)
  np.testing.assert_allclose(joints, cases[f'intaghand.{side}.joints'], atol=PARITY_ATOL_M, rtol=0)


def test_rotations_match_reference(cases):
  rodrigues = jax.vmap(rotation.axis_angle_to_matrix)(jnp.asarray(cases['case.axisangle']))
  np.testing.assert_allclose(rodrigues, cases['intaghand.rodrigues'], atol=1e-6)
  rot6d = jax.vmap(rotation.rot6d_to_matrix)(jnp.asarray(cases['case.six_d']))
  np.testing.assert_allclose(rot6d, cases['case.root_rotmat'], atol=1e-6)
  quat = jax.vmap(rotation.axis_angle_to_matrix_quat)(jnp.asarray(cases['case.axisangle']))
  np.testing.assert_allclose(quat, rodrigues, atol=1e-6)


def test_left_fix_changes_left_outputs(pair, cases, fixture_mano_dir):
  """Without the fix the left hand differs from the reference; with it, it matches (docs/quirks.md#q20)."""
  unfixed = load_mano(find_mano_file(fixture_mano_dir, 'left'), 'left')
  np.testing.assert_array_equal(unfixed.shapedirs[:, 0], -pair.left.shapedirs[:, 0])
  pose = np.concatenate([cases['case.six_d'], cases['case.pca']], axis=1)
  verts, _ = network_mano(unfixed, jnp.asarray(pose), jnp.asarray(cases['case.betas']), center_idx=None)
  assert np.abs(np.asarray(verts) - cases['manopth.left.verts']).max() > 1e-3


def _smplx_mano(path, is_rhand):
  import smplx  # pylint: disable=import-outside-toplevel

  return smplx.MANO(path, is_rhand=is_rhand, use_pca=False, flat_hand_mean=False, batch_size=4)


@pytest.fixture(scope='module')
def generated_mano_dir(tmp_path_factory):
  """The synthetic asset of `data_prep.synthetic_mano`, written in the official pickle layout."""
  from data_prep import synthetic_mano  # pylint: disable=import-outside-toplevel

  folder = tmp_path_factory.mktemp('generated_mano')
  raw = synthetic_mano.make_synthetic_mano(0)
  for side in ('left', 'right'):
    synthetic_mano.write_mano_pickle(raw[side], str(folder / f'MANO_{side.upper()}.pkl'))
  return str(folder)


@pytest.mark.parametrize('asset', ['fixture', 'generated'])
@pytest.mark.parametrize('side', ['left', 'right'])
def test_matches_smplx(fixture_mano_dir, generated_mano_dir, asset, side):
  """smplx is an independent MANO implementation. Its known differences: no left fix (docs/quirks.md#q20),
  16 joints without tips, axis-angle hand pose (PCA off) with the mean pose added, translation added."""
  path = find_mano_file(fixture_mano_dir if asset == 'fixture' else generated_mano_dir, side)
  asset = load_mano(path, side)  # unfixed, as smplx reads it
  rng = np.random.default_rng(3)
  root_aa = rng.normal(0, 0.5, (4, 3)).astype(np.float32)
  hand_aa = rng.normal(0, 0.3, (4, 45)).astype(np.float32)
  betas = rng.normal(0, 1.0, (4, 10)).astype(np.float32)
  trans = rng.normal(0, 0.1, (4, 3)).astype(np.float32)
  ref = _smplx_mano(path, side == 'right')(
      global_orient=torch.from_numpy(root_aa),
      hand_pose=torch.from_numpy(hand_aa),
      betas=torch.from_numpy(betas),
      transl=torch.from_numpy(trans),
  )
  root = jax.vmap(rotation.axis_angle_to_matrix)(jnp.asarray(root_aa))
  verts, joints = gt_mano(
      asset, root, jnp.asarray(hand_aa) + asset.hands_mean, jnp.asarray(betas), jnp.asarray(trans), pose_is_pca=False
  )
  np.testing.assert_allclose(verts, ref.vertices.detach().numpy(), atol=PARITY_ATOL_M)
  np.testing.assert_allclose(
      np.asarray(joints)[:, MANO16_IN_21], ref.joints.detach().numpy()[:, :16], atol=PARITY_ATOL_M
  )


def test_gradients_match_finite_differences(pair):
  with jax.enable_x64(True):
    asset = jax.tree.map(lambda x: np.asarray(x, np.float64) if x.dtype == np.float32 else x, pair.right)
    rng = np.random.default_rng(0)
    pose = jnp.asarray(np.concatenate([[1, 0.1, 0, 0.2, 1, 0.1], rng.normal(0, 0.5, 45)])[None])
    betas = jnp.asarray(rng.normal(0, 1, (1, 10)))
    weights = jnp.asarray(rng.normal(0, 1, (1, 778, 3)))

    def scalar(pose, betas):
      verts, joints = network_mano(asset, pose, betas, center_idx=0)
      return jnp.sum(verts * weights) + jnp.sum(joints**2)

    jax.test_util.check_grads(scalar, (pose, betas), order=1, modes=['rev'], eps=1e-6, atol=1e-6, rtol=1e-6)


def test_gradient_finite_at_identity_pose(pair):
  """Zero rotation is where naive norms give NaN gradients."""

  def scalar(hand_aa):
    verts, _ = gt_mano(pair.right, jnp.eye(3)[None], hand_aa, jnp.zeros((1, 10)), pose_is_pca=False)
    return jnp.sum(verts)

  grad = jax.grad(scalar)(jnp.zeros((1, 45)))
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


class JitTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_jit_and_eager_agree(self):
    from tests.conftest import FIXTURE_DIR  # pylint: disable=import-outside-toplevel

    pair = load_mano_pair(f'{FIXTURE_DIR}/mano')
    rng = np.random.default_rng(1)
    pose = jnp.asarray(np.concatenate([rng.normal(0, 1, (3, 6)), rng.normal(0, 0.5, (3, 45))], 1), jnp.float32)
    betas = jnp.asarray(rng.normal(0, 1, (3, 10)), jnp.float32)
    fn = self.variant(lambda p, b: network_mano(pair.left, p, b, center_idx=0))
    verts, joints = fn(pose, betas)
    ref_verts, ref_joints = network_mano(pair.left, pose, betas, center_idx=0)
    chex.assert_trees_all_close((verts, joints), (ref_verts, ref_joints), atol=1e-6)
    chex.assert_shape([verts, joints], [(3, 778, 3), (3, 21, 3)])


def test_bfloat16(pair):
  rng = np.random.default_rng(2)
  pose = jnp.asarray(np.concatenate([rng.normal(0, 1, (2, 6)), rng.normal(0, 0.5, (2, 45))], 1), jnp.float32)
  betas = jnp.asarray(rng.normal(0, 1, (2, 10)), jnp.float32)
  verts32, joints32 = network_mano(pair.right, pose, betas)
  verts16, joints16 = jax.jit(network_mano)(pair.right, pose.astype(jnp.bfloat16), betas.astype(jnp.bfloat16))
  assert verts16.dtype == jnp.bfloat16 and joints16.dtype == jnp.bfloat16
  # bfloat16 keeps 8 mantissa bits: ~0.4 % of the ~0.2 m extent, accumulated over the chain.
  np.testing.assert_allclose(np.asarray(verts16, np.float32), verts32, atol=5e-3)
  np.testing.assert_allclose(np.asarray(joints16, np.float32), joints32, atol=5e-3)
