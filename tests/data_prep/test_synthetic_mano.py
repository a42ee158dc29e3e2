"""The synthetic MANO pair: mesh topology, hand-like geometry and skinning, file formats, mirror."""

import collections
import importlib.util
import logging
import os
import pickle
import pickletools
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
from scipy.spatial.transform import Rotation
from PIL import Image

from data_prep import synthetic_mano
from dir_jax.mano import constants
from dir_jax.mano import gt_mano, load_mano, load_mano_pair, network_mano
from dir_jax.mano.safe_pickle import load_mano_pickle

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIRROR = np.array([-1.0, 1.0, 1.0])
# Mirror parity: both hands run the same float32 arithmetic up to signs, except manopth's
# Rodrigues, which adds 1e-8 to every axis-angle component before the norm (not sign-symmetric);
# that moves vertices by ~1e-8 m. 1e-6 m is far above it and far below any real asymmetry.
MIRROR_ATOL_M = 1e-6
# (distal MANO joint, fingertip vertex) per digit: thumb, index, middle, ring, pinky.
TIPS = ((15, 745), (3, 317), (6, 444), (12, 556), (9, 673))
TIP_JOINTS_21 = (4, 8, 12, 16, 20)


@pytest.fixture(scope='module')
def pair():
  return synthetic_mano.make_synthetic_mano(0)


@pytest.fixture(scope='module')
def folders(pair, tmp_path_factory):
  """{'pkl', 'chumpy', 'npz'}: one folder per file variant, holding both hands."""
  out = {}
  for variant in ('pkl', 'chumpy', 'npz'):
    folder = tmp_path_factory.mktemp(variant)
    for side in constants.SIDES:
      stem = os.path.join(folder, f'MANO_{side.upper()}')
      if variant == 'npz':
        synthetic_mano.write_mano_npz(pair[side], stem + '.npz')
      else:
        synthetic_mano.write_mano_pickle(pair[side], stem + '.pkl', chumpy_shapedirs=variant == 'chumpy')
    out[variant] = str(folder)
  return out


@pytest.fixture(scope='module')
def assets(folders):
  return load_mano_pair(folders['pkl'])


def _directed_edges(faces):
  return collections.Counter((int(a), int(b)) for f in faces for a, b in zip(f, np.roll(f, -1)))


@pytest.mark.parametrize('side', constants.SIDES)
def test_keys_shapes_dtypes(pair, side):
  raw = pair[side]
  assert tuple(sorted(raw)) == tuple(sorted(synthetic_mano.MANO_KEYS))
  expected = {
      'v_template': (778, 3),
      'shapedirs': (778, 3, 10),
      'posedirs': (778, 3, 135),
      'J': (16, 3),
      'weights': (778, 16),
      'hands_components': (45, 45),
      'hands_mean': (45,),
      'hands_coeffs': (1554, 45),
  }
  for key, shape in expected.items():
    assert raw[key].shape == shape and raw[key].dtype == np.float32, key
  assert isinstance(raw['J_regressor'], scipy.sparse.csc_matrix)
  assert raw['J_regressor'].shape == (16, 778)
  assert raw['f'].dtype == np.uint32 and raw['f'].shape == (1538, 3)
  assert raw['kintree_table'].dtype == np.int64
  np.testing.assert_array_equal(
      raw['kintree_table'], [[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], list(range(16))]
  )
  assert (raw['bs_style'], raw['bs_type']) == ('lbs', 'lrotmin')
  comps = raw['hands_components'].astype(np.float64)
  np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-6)


@pytest.mark.parametrize('side', constants.SIDES)
def test_mesh_is_a_consistently_oriented_disc(pair, side):
  faces = pair[side]['f'].astype(np.int64)
  assert np.array_equal(np.unique(faces), np.arange(778))
  directed = _directed_edges(faces)
  assert max(directed.values()) == 1, 'a directed edge is used twice: inconsistent orientation'
  undirected = collections.Counter(tuple(sorted(e)) for e in directed)
  assert max(undirected.values()) == 2, 'non-manifold edge'
  # An edge used twice is used in both directions because no directed edge repeats.
  boundary = [e for e, n in undirected.items() if n == 1]
  nbrs = collections.defaultdict(list)
  for a, b in boundary:
    nbrs[a].append(b)
    nbrs[b].append(a)
  assert len(boundary) == 16 and all(len(n) == 2 for n in nbrs.values())
  loop, prev = [boundary[0][0]], None
  while len(loop) == 1 or loop[-1] != loop[0]:
    nxt = [n for n in nbrs[loop[-1]] if n != prev][0]
    prev = loop[-1]
    loop.append(nxt)
  assert len(loop) - 1 == 16, 'the boundary is more than one loop'
  num_edges = len(undirected)
  assert 778 - num_edges + 1538 == 1  # Euler characteristic of a disc
  rows, cols = faces[:, [0, 1, 2]].ravel(), faces[:, [1, 2, 0]].ravel()
  adjacency = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(778, 778))
  assert scipy.sparse.csgraph.connected_components(adjacency, directed=False)[0] == 1
  # The open boundary is the wrist: the plane x = x of joint 0, around joint 0.
  wrist = pair[side]['v_template'][sorted(nbrs)]
  np.testing.assert_allclose(wrist[:, 0], pair[side]['J'][0, 0], atol=1e-7)
  np.testing.assert_allclose(wrist.mean(0), pair[side]['J'][0], atol=1e-7)
  tris = pair[side]['v_template'].astype(np.float64)[faces]
  areas = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
  assert areas.min() > 1e-7, 'degenerate triangle'


@pytest.mark.parametrize('side', constants.SIDES)
def test_normals_point_outwards(pair, side):
  verts = pair[side]['v_template'].astype(np.float64)
  faces = pair[side]['f'].astype(np.int64)
  directed = _directed_edges(faces)
  # Close the wrist with a fan around its centroid, following the boundary's own direction.
  boundary = [e for e in directed if e[::-1] not in directed]
  center = verts[sorted({a for a, _ in boundary})].mean(0)
  verts = np.concatenate([verts, center[None]])
  cap = np.array([(b, a, len(verts) - 1) for a, b in boundary])
  closed = verts[np.concatenate([faces, cap])]
  volume = np.einsum('ij,ij->i', closed[:, 0], np.cross(closed[:, 1], closed[:, 2])).sum() / 6.0
  assert 1.5e-4 < volume < 4e-4, f'volume {volume} m^3 (a hand holds ~2-4e-4 m^3)'


@pytest.mark.parametrize('side', constants.SIDES)
def test_rest_wrist_lies_where_the_real_mano_puts_it(pair, side):
  """Joint 0 of the rest template is ~9.6 cm from the origin (real MANO_RIGHT: (0.0957, 0.0064,
  0.0062) m; the left hand mirrored), so a root rotation about the origin instead of the wrist is
  centimetres off, as with the real model."""
  raw = pair[side]
  wrist = raw['J_regressor'].toarray().astype(np.float64)[0] @ raw['v_template'].astype(np.float64)
  expected = np.array([0.0957, 0.0064, 0.0062]) * (MIRROR if side == 'left' else 1.0)
  np.testing.assert_allclose(wrist, expected, atol=1e-4)
  np.testing.assert_allclose(raw['J'][0], wrist, atol=1e-7)
  turn = Rotation.from_rotvec([0.0, 0.0, np.pi / 2]).as_matrix()
  assert np.linalg.norm(turn @ wrist - wrist) > 0.13  # |(R - I) J0| of a quarter turn: sqrt(2) |J0|


def test_rest_geometry_is_hand_sized(pair):
  raw = pair['right']
  # Geometry relative to the rest wrist (joint 0), where the hand is built.
  wrist = raw['J'][0]
  verts, joints = raw['v_template'] - wrist, raw['J'] - wrist
  np.testing.assert_allclose(joints[0], 0.0, atol=1e-7)
  # MCP joints of index, middle, ring, pinky across the palm (z), at the knuckles (x ~ 0.08-0.09).
  mcp = joints[[1, 4, 10, 7]]
  np.testing.assert_allclose(mcp[:, 2], [-0.025, -0.0065, 0.0115, 0.0285], atol=1e-6)
  assert np.all((mcp[:, 0] > 0.07) & (mcp[:, 0] < 0.095))
  bone = lambda a, b: np.linalg.norm(joints[b] - joints[a])
  for (a, b), length in {(4, 5): 0.044, (5, 6): 0.026, (7, 8): 0.031, (8, 9): 0.018}.items():
    assert bone(a, b) == pytest.approx(length, abs=1e-6), (a, b)
  middle_dir = (joints[6] - joints[5]) / bone(5, 6)
  assert (verts[444] - joints[6]) @ middle_dir == pytest.approx(0.022, abs=1e-6)
  # Palm: ~0.07-0.08 wide at the knuckles, ~0.02-0.03 thick; thumb palmar side, towards -z.
  not_thumb = ~np.isin(np.argmax(raw['weights'], axis=1), [13, 14, 15])
  knuckles = verts[not_thumb & (verts[:, 0] > 0.07) & (verts[:, 0] < 0.085)]
  assert 0.07 < np.ptp(knuckles[:, 2]) < 0.08
  palm = verts[(verts[:, 0] > 0.03) & (verts[:, 0] < 0.07) & (np.abs(verts[:, 2]) < 0.02)]
  assert 0.02 < np.ptp(palm[:, 1]) < 0.03
  thumb = joints[13:16]
  assert np.all(thumb[:, 2] < -0.03) and np.all(thumb[1:, 1] < -0.005)
  assert np.all(np.diff(thumb[:, 0]) > 0) and np.all(np.diff(thumb[:, 2]) < 0)
  # >= 0 up to the float32 rounding of the translated template (~1e-8 m).
  assert verts[:, 0].min() >= -1e-7 and verts[:, 0].max() == pytest.approx(0.18, abs=0.005)


@pytest.mark.parametrize('side', constants.SIDES)
def test_fingertip_ids_are_the_extreme_vertices(pair, side):
  raw = pair[side]
  # Relative to the rest wrist (joint 0).
  verts, joints, weights = raw['v_template'] - raw['J'][0], raw['J'] - raw['J'][0], raw['weights']
  owner = np.argmax(weights, axis=1)
  for distal, tip in TIPS:
    candidates = np.flatnonzero(owner == distal)
    direction = joints[distal] - joints[distal - 1]
    assert tip == candidates[np.argmax(verts[candidates] @ direction)], (distal, tip)
  assert np.argmax(np.abs(verts[:, 0])) == 444  # the middle finger is the longest
  # 445 is the middle fingertip's second vertex, just dorsal (+y) of 444.
  assert owner[445] == 6 and verts[445, 1] > verts[444, 1] + 0.002
  assert np.linalg.norm(verts[445] - verts[444]) < 0.005


def test_regressor_and_weights(pair):
  raw = pair['right']
  regressor = raw['J_regressor'].toarray()
  for name, rows in (('J_regressor', regressor), ('weights', raw['weights'])):
    assert rows.min() >= 0.0, name
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-6, err_msg=name)
  assert (regressor > 0).sum(1).tolist() == [16] + [8] * 15
  np.testing.assert_allclose(regressor @ raw['v_template'], raw['J'], atol=1e-7)
  verts, weights = raw['v_template'] - raw['J'][0], raw['weights']  # relative to the rest wrist
  inner_palm = (verts[:, 0] < 0.05) & (np.abs(verts[:, 2]) < 0.015)  # away from thumb and knuckles
  assert inner_palm.sum() >= 24 and weights[inner_palm, 0].min() > 0.99
  # The middle of a phalanx follows its own joint; the creases blend parent and child.
  owner = np.argmax(weights, axis=1)
  joints = raw['J'] - raw['J'][0]
  for joint, child, own in ((1, 2, 0.9), (4, 5, 0.9), (5, 6, 0.6), (13, 14, 0.8)):
    axis = (joints[child] - joints[joint]) / np.linalg.norm(joints[child] - joints[joint])
    rel = verts - 0.5 * (joints[joint] + joints[child])
    radial = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    mid = (np.abs(rel @ axis) < 0.005) & (radial < 0.015) & np.isin(owner, [joint, child])
    assert mid.sum() >= 8 and weights[mid, joint].min() > own, joint
    crease = np.linalg.norm(verts - joints[child], axis=1) < 0.012
    crease &= np.isin(owner, [joint, child])
    assert crease.sum() >= 8 and 0.3 < weights[crease, child].mean() < 0.7, child


def test_shape_and_pose_directions(pair):
  raw = pair['right']
  # Relative to the rest wrist (joint 0): the shape directions are about it.
  verts, dirs, joints = raw['v_template'] - raw['J'][0], raw['shapedirs'], raw['J'] - raw['J'][0]
  np.testing.assert_allclose(dirs[:, :, 0], 0.05 * verts, atol=1e-7)  # overall size, 5% per unit
  wrist = np.flatnonzero(np.abs(verts[:, 0]) < 1e-7)
  assert np.abs(dirs[wrist, :, 1]).max() == 0.0
  assert 0.003 < dirs[444, 0, 1] < 0.005  # middle finger length: ~4 mm per unit at the tip
  regress = lambda d: raw['J_regressor'].toarray() @ d
  width = regress(dirs[:, :, 2])
  assert width[1, 2] < -0.002 and width[7, 2] > 0.002  # index MCP to -z, pinky MCP to +z
  thick = dirs[:, 1, 3]
  palm = (verts[:, 0] > 0.03) & (verts[:, 0] < 0.07) & (np.argmax(raw['weights'], axis=1) == 0)
  assert np.all(thick[palm & (verts[:, 1] > 0.01)] > 0.0)
  assert np.all(thick[palm & (verts[:, 1] < -0.01)] < 0.0)
  assert 0.001 < np.abs(dirs[:, :, 4:]).max() <= 0.002 + 1e-7
  assert np.abs(raw['posedirs']).max() <= 0.003 + 1e-7
  # The correctives of the middle finger's PIP joint (joint 5, feature block 4) stay near it.
  block = np.abs(raw['posedirs'][:, :, 9 * 4 : 9 * 5]).max(axis=(1, 2))
  far = np.linalg.norm(verts - joints[5], axis=1) > 0.03
  assert block.max() > 0.001 and block[far].max() < 1e-5


def test_file_variants_load_identically(pair, folders):
  loaded = {variant: load_mano_pair(folder) for variant, folder in folders.items()}
  for side in constants.SIDES:
    reference = loaded['pkl'][side]
    np.testing.assert_array_equal(reference.v_template, pair[side]['v_template'])
    np.testing.assert_array_equal(reference.faces, pair[side]['f'].astype(np.int32))
    np.testing.assert_array_equal(reference.J_regressor, pair[side]['J_regressor'].toarray())
    for variant in ('chumpy', 'npz'):
      for name in (
          'v_template',
          'shapedirs',
          'posedirs',
          'J_regressor',
          'weights',
          'faces',
          'hands_components',
          'hands_mean',
      ):
        got, want = getattr(loaded[variant][side], name), getattr(reference, name)
        assert got.dtype == want.dtype, (variant, name)
        np.testing.assert_array_equal(got, want, err_msg=f'{variant} {side} {name}')


def test_chumpy_pickle_references_chumpy(pair, folders):
  path = os.path.join(folders['chumpy'], 'MANO_RIGHT.pkl')
  with open(path, 'rb') as f:
    data = f.read()
  ops = list(pickletools.genops(data))
  assert ops[0][0].name == 'PROTO' and ops[0][1] == 2
  globals_ = [arg for op, arg, _ in ops if op.name == 'GLOBAL']
  assert 'chumpy.ch Ch' in globals_
  assert any(g.startswith('scipy.sparse') and g.endswith(' csc_matrix') for g in globals_)
  assert b'_dirty_vars' in data
  assert 'chumpy' not in sys.modules
  raw = load_mano_pickle(path)
  np.testing.assert_array_equal(raw['shapedirs'], pair['right']['shapedirs'])
  assert raw['kintree_table'][0, 0] == 4294967295 and raw['f'].dtype == np.uint32
  # Plain pickle without chumpy installed cannot rebuild it: it really names chumpy's class.
  if importlib.util.find_spec('chumpy') is None:
    with pytest.raises(ModuleNotFoundError, match='chumpy'):
      pickle.loads(data)
  plain = os.path.join(folders['pkl'], 'MANO_RIGHT.pkl')
  with open(plain, 'rb') as f:
    restored = pickle.load(f)
  assert (restored['J_regressor'] != pair['right']['J_regressor']).nnz == 0


def test_npz_layout_matches_the_reference_fixture(folders, fixture_mano_dir):
  for side in ('RIGHT', 'LEFT'):
    with (
        np.load(os.path.join(folders['npz'], f'MANO_{side}.npz')) as ours,
        np.load(os.path.join(fixture_mano_dir, f'MANO_{side}.npz')) as ref,
    ):
      assert sorted(ours.files) == sorted(ref.files)
      for key in ref.files:
        assert (ours[key].shape, ours[key].dtype) == (ref[key].shape, ref[key].dtype), key
      assert ours['kintree_table'][0, 0] == -1 and str(ours['bs_style']) == 'lbs'


def test_left_fix_fires_and_left_mirrors_right(folders, caplog):
  with caplog.at_level(logging.INFO):
    hands = load_mano_pair(folders['chumpy'])
  assert any('Fix shapedirs' in r.message for r in caplog.records)
  rng = np.random.default_rng(1)
  batch = 4
  aa = rng.normal(0.0, 0.6, (batch, 3))
  root = Rotation.from_rotvec(aa).as_matrix()
  root_left = MIRROR[:, None] * root * MIRROR[None, :]
  six_d = lambda r: np.concatenate([r[:, :, 0], r[:, :, 1]], axis=1)
  pca = rng.normal(0.0, 0.8, (batch, 45))
  betas = rng.normal(0.0, 1.0, (batch, 10))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  v_r, j_r = network_mano(hands.right, f32(np.concatenate([six_d(root), pca], 1)), f32(betas))
  v_l, j_l = network_mano(hands.left, f32(np.concatenate([six_d(root_left), pca], 1)), f32(betas))
  v_r, j_r, v_l, j_l = (np.asarray(a) for a in (v_r, j_r, v_l, j_l))
  assert np.abs(v_r).max() > 0.05
  np.testing.assert_allclose(v_l, v_r * MIRROR, atol=MIRROR_ATOL_M, rtol=0)
  others = [k for k in range(21) if k != 12]  # the left network layer's middle tip is vertex 445
  np.testing.assert_allclose(j_l[:, others], j_r[:, others] * MIRROR, atol=MIRROR_ATOL_M, rtol=0)
  np.testing.assert_allclose(j_l[:, 12], v_r[:, 445] * MIRROR, atol=MIRROR_ATOL_M, rtol=0)
  g_r, gj_r = gt_mano(hands.right, f32(root), f32(pca), f32(betas))
  g_l, gj_l = gt_mano(hands.left, f32(root_left), f32(pca), f32(betas))
  np.testing.assert_allclose(np.asarray(g_l), np.asarray(g_r) * MIRROR, atol=MIRROR_ATOL_M, rtol=0)
  np.testing.assert_allclose(np.asarray(gj_l), np.asarray(gj_r) * MIRROR, atol=MIRROR_ATOL_M, rtol=0)


def test_deterministic_per_seed_and_different_across_seeds(pair):
  again, other = synthetic_mano.make_synthetic_mano(0), synthetic_mano.make_synthetic_mano(1)
  for side in constants.SIDES:
    for key in synthetic_mano.MANO_KEYS:
      a, b = again[side][key], pair[side][key]
      if scipy.sparse.issparse(a):
        a, b = a.toarray(), b.toarray()
      np.testing.assert_array_equal(a, b, err_msg=key)
    assert not np.allclose(other[side]['posedirs'], pair[side]['posedirs'])
    assert not np.allclose(other[side]['shapedirs'][..., 4:], pair[side]['shapedirs'][..., 4:])
    assert not np.allclose(other[side]['hands_coeffs'], pair[side]['hands_coeffs'])
    np.testing.assert_array_equal(other[side]['hands_components'][:2], pair[side]['hands_components'][:2])
    np.testing.assert_array_equal(other[side]['v_template'], pair[side]['v_template'])


@pytest.mark.parametrize('side', constants.SIDES)
def test_pca_flexion_curls_fingertips_towards_the_palm(assets, side):
  pose = np.zeros((2, 51), np.float32)
  pose[:, :6] = [1, 0, 0, 0, 1, 0]
  pose[1, 6] = 2.0  # first PCA component: flexion, ~0.5 rad more per joint
  _, joints = network_mano(assets[side], jnp.asarray(pose), jnp.zeros((2, 10)))
  tips = np.asarray(joints)[:, TIP_JOINTS_21]
  assert np.all(tips[1, :, 1] < tips[0, :, 1] - 0.005), tips[:, :, 1]
  assert np.all(np.linalg.norm(tips[1], axis=1) < np.linalg.norm(tips[0], axis=1))


def test_bending_one_joint_bends_the_finger_there(assets):
  asset = assets.right
  hand_pose = np.zeros((1, 45), np.float32)
  hand_pose[0, 3 * (2 - 1) : 3 * 2] = [0.0, 0.0, -np.pi / 2]  # index PIP (joint 2), curl 90 degrees
  verts, _ = gt_mano(asset, jnp.eye(3)[None], jnp.asarray(hand_pose), jnp.zeros((1, 10)), pose_is_pca=False)
  rest, _ = gt_mano(asset, jnp.eye(3)[None], jnp.zeros((1, 45)), jnp.zeros((1, 10)), pose_is_pca=False)
  verts, rest = np.asarray(verts[0]), np.asarray(rest[0])
  weights, joints = np.asarray(asset.weights), np.asarray(asset.J_regressor @ asset.v_template)
  moved = np.linalg.norm(verts - rest, axis=1)
  unaffected = weights[:, 2] + weights[:, 3] < 1e-3
  assert moved[unaffected].max() < 1e-4
  # The distal part turns 90 degrees about the PIP joint, towards the palm (-y).
  distal = weights[:, 3] > 0.99
  rot = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  expected = (rest[distal] - joints[2]) @ rot.T + joints[2]
  np.testing.assert_allclose(verts[distal], expected, atol=3e-3)
  assert verts[317, 1] < rest[317, 1] - 0.03


def test_cli_writes_files_and_a_picture(tmp_path):
  out = tmp_path / 'mano'
  result = subprocess.run(
      [sys.executable, '-m', 'data_prep.synthetic_mano', '--out', str(out), '--seed', '3'],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert result.returncode == 0, result.stderr
  names = ['MANO_RIGHT.pkl', 'MANO_LEFT.pkl', 'MANO_RIGHT.npz', 'MANO_LEFT.npz', 'hands.png']
  for name in names:
    assert (out / name).is_file() and (out / name).stat().st_size > 10_000, name
  np.testing.assert_array_equal(
      load_mano(str(out / 'MANO_LEFT.npz')).posedirs, synthetic_mano.make_synthetic_mano(3)['left']['posedirs']
  )
  with Image.open(out / 'hands.png') as image:
    rgb = np.asarray(image.convert('RGB')).astype(int)
  assert rgb.shape[0] >= 400 and rgb.shape[1] >= 1000
  skin = (rgb[..., 0] > 120) & (rgb[..., 0] > rgb[..., 1] + 15) & (rgb[..., 1] > rgb[..., 2] + 5)
  assert skin.mean() > 0.05, 'the picture shows no shaded hands'
