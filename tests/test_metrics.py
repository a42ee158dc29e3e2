"""Evaluation metrics against hand-computed cases: alignment, MPJPE/MPVPE, MRRPE, MIAA, PCK/AUC,
interpenetration volume, the accumulator and the report helpers."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from data_prep import synthetic_mano
from dir_jax import mesh_volume, metrics, protocol, report
from dir_jax.data import schema
from dir_jax.mano import constants, load_mano_pair
from dir_jax.protocol import Protocol

# float64 throughout; the MANO regressor rows are float32 values, so they sum to 1 within ~1e-7 and a
# translation of ~0.5 m leaks ~1e-7 m = 1e-4 mm into regressed joints.
ATOL_MM = 1e-3
NO_SCALE_WRIST = Protocol('wrist', False, 'mano', 'interacting')
T2, T3, T3N = metrics.SETTINGS  # wrist + scale (DIR's), middle MCP + scale, middle MCP unscaled
DIR_NAME = protocol.DIR.name


@pytest.fixture(scope='module')
def mano(tmp_path_factory):
  """The repository's synthetic MANO pair (manifold, one 16-vertex wrist hole like MANO)."""
  folder = tmp_path_factory.mktemp('mano')
  raw = synthetic_mano.make_synthetic_mano(0)
  for side in constants.SIDES:
    synthetic_mano.write_mano_npz(raw[side], os.path.join(folder, f'MANO_{side.upper()}.npz'))
  return load_mano_pair(str(folder))


@pytest.fixture(scope='module')
def eval_mano(mano):
  return metrics.EvalMano.from_pair(mano)


def one_hot_eval_mano(eval_mano):
  """Joint k = vertex k: makes per-joint errors directly controllable."""
  jr = np.eye(constants.NUM_JOINTS, constants.NUM_VERTS)
  return metrics.EvalMano({h: jr for h in metrics.HANDS}, eval_mano.closed_faces, eval_mano.hole_loops)


def random_rotation(rng):
  q, r = np.linalg.qr(rng.normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q * np.linalg.det(q)


def make_batch(mano, num, seed, noise_m=0.004):
  """GT in a camera frame ~0.5 m away, crop intrinsics, and two noisy stage predictions."""
  rng = np.random.default_rng(seed)
  gt, stages = {}, [dict(), dict()]
  for h in metrics.HANDS:
    template = np.asarray(mano[h].v_template, np.float64)
    rot = np.stack([random_rotation(rng) for _ in range(num)])
    trans = np.array([0.05 if h == 'right' else -0.05, 0.0, 0.5]) + rng.normal(scale=0.01, size=(num, 3))
    gt[f'verts_cam_{h}'] = np.einsum('bij,vj->bvi', rot, template) + trans[:, None]
    for s, stage in enumerate(stages):
      noisy = gt[f'verts_cam_{h}'] * (1 + 0.1 * s) + rng.normal(scale=noise_m, size=(num, 778, 3))
      stage[f'mesh_xyz_{h}'] = noisy - noisy[:, :1]  # any centring: alignment removes it
  focal = rng.uniform(400, 600, size=num)
  gt['intrinsics'] = np.stack([np.array([[f, 0, 128], [0, f, 128], [0, 0, 1.0]]) for f in focal])
  for stage in stages:
    # Place the right hand ~3 cm from its GT place relative to the left one, overlapping it.
    stage['offset'] = (
        np.full((num, 3), [0.03, 0.0, 0.0]) + stage['mesh_xyz_left'][:, 0] - stage['mesh_xyz_right'][:, 0]
    ) / metrics.OFFSET_UNIT_M
  return gt, stages


# ---------------------------------------------------------------------------------------------------
# Regressor and alignment.


def test_eval_joint_regressor_rows(mano):
  asset = mano.right
  jr = metrics.eval_joint_regressor(asset)
  assert jr.shape == (21, 778) and jr.dtype == np.float64
  mano_rows = {
      0: 0,
      1: 13,
      2: 14,
      3: 15,
      5: 1,
      6: 2,
      7: 3,
      9: 4,
      10: 5,
      11: 6,
      13: 10,
      14: 11,
      15: 12,
      17: 7,
      18: 8,
      19: 9,
  }  # 21-joint row -> MANO joint
  for row, joint in mano_rows.items():
    np.testing.assert_array_equal(jr[row], asset.J_regressor[joint])
  tips = {4: 745, 8: 317, 12: 444, 16: 556, 20: 673}  # thumb, index, middle (444 for both), ring, pinky
  for row, vert in tips.items():
    assert jr[row, vert] == 1.0 and np.count_nonzero(jr[row]) == 1
  np.testing.assert_array_equal(metrics.eval_joint_regressor(mano.left)[12], jr[12])  # left tip 444 too
  np.testing.assert_allclose(jr.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize('setting', [*metrics.SETTINGS.values(), NO_SCALE_WRIST])
def test_translation_gives_zero_error(eval_mano, mano, setting):
  gt, _ = make_batch(mano, 3, seed=0)
  jr = eval_mano.joint_regressor['left']
  pred = gt['verts_cam_left'] + np.array([[[0.3, -0.2, 0.1]], [[0.0, 0.1, -0.4]], [[1.0, 2.0, 3.0]]])
  err = metrics.hand_errors(jr, gt['verts_cam_left'], pred, gt['intrinsics'], setting)
  for key in ('joint_mm', 'vert_mm'):
    np.testing.assert_allclose(err[key], 0.0, atol=ATOL_MM)
  for key in ('joint_px', 'vert_px'):
    np.testing.assert_allclose(err[key], 0.0, atol=1e-3)


def test_scale_about_wrist(eval_mano, mano):
  """pred = J0 + 2 (V - J0): zero with scaling; |J - J0| without (wrist) and |J - J9| (MCP)."""
  gt, _ = make_batch(mano, 2, seed=1)
  jr = eval_mano.joint_regressor['right']
  verts = gt['verts_cam_right']
  joints = jr @ verts
  pred = joints[:, :1] + 2.0 * (verts - joints[:, :1]) + np.array([0.1, 0.2, 0.3])
  errs = {
      name: metrics.hand_errors(jr, verts, pred, gt['intrinsics'], s)
      for name, s in {**metrics.SETTINGS, 'wrist': NO_SCALE_WRIST}.items()
  }
  np.testing.assert_allclose(errs[T2]['joint_mm'], 0.0, atol=ATOL_MM)
  np.testing.assert_allclose(errs[T3]['vert_mm'], 0.0, atol=ATOL_MM)
  np.testing.assert_allclose(
      errs['wrist']['joint_mm'], 1000 * np.linalg.norm(joints - joints[:, :1], axis=-1), atol=ATOL_MM
  )
  np.testing.assert_allclose(
      errs['wrist']['vert_mm'], 1000 * np.linalg.norm(verts - joints[:, :1], axis=-1), atol=ATOL_MM
  )
  np.testing.assert_allclose(
      errs[T3N]['joint_mm'], 1000 * np.linalg.norm(joints - joints[:, 9:10], axis=-1), atol=ATOL_MM
  )
  assert errs['wrist']['joint_mm'].mean() > 50  # a real error, not a vacuous zero


def test_bone_length_scale_and_root_align():
  joints = np.zeros((2, 21, 3))
  joints[0, 9] = [0.0, 0.03, 0.04]  # 5 cm
  joints[1, 9] = [0.1, 0.0, 0.0]  # 10 cm
  pred = joints * np.array([2.0, 0.5])[:, None, None]
  np.testing.assert_allclose(metrics.bone_length_scale(joints, pred), [0.5, 2.0])
  j, v = metrics.root_align(joints + 1.0, joints[:, :4] + 1.0, 9, np.array([2.0, 3.0]))
  np.testing.assert_allclose(j[0, 0], [0.0, -0.06, -0.08])
  np.testing.assert_allclose(v[1, 0], [-0.3, 0.0, 0.0])


def test_known_offsets_give_exact_means(eval_mano, mano):
  """Joint k of the left hand moved by k mm (k = 1..20, not the wrist): MPJPE = 210 / 21 = 10 mm,
  MPVPE = 210 / 778 mm; the right hand moved by 3 mm on vertex 100 only: MPJPE 0, MPVPE 3 / 778."""
  one_hot = one_hot_eval_mano(eval_mano)
  gt, _ = make_batch(mano, 2, seed=2)
  directions = np.random.default_rng(0).normal(size=(21, 3))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  left = gt['verts_cam_left'].copy()
  left[:, 1:21] += 1e-3 * np.arange(1, 21)[:, None] * directions[1:]
  right = gt['verts_cam_right'].copy()
  right[:, 100] += [0.003, 0.0, 0.0]
  pred = {'mesh_xyz_left': left, 'mesh_xyz_right': right, 'offset': np.zeros((2, 3))}
  errors = metrics.sample_errors(one_hot, gt, pred, {'wrist': NO_SCALE_WRIST}, voxel_m=None)
  np.testing.assert_allclose(errors['wrist/joint_mm/left'], np.tile(np.arange(21.0), (2, 1)), atol=1e-9)
  result = metrics.summarize(errors)
  assert result['wrist/mpjpe/left'] == pytest.approx(10.0, abs=1e-9)
  assert result['wrist/mpvpe/left'] == pytest.approx(210 / 778, abs=1e-9)
  assert result['wrist/mpjpe/right'] == pytest.approx(0.0, abs=1e-9)
  assert result['wrist/mpvpe/right'] == pytest.approx(3 / 778, abs=1e-9)
  assert result['wrist/mpjpe/all'] == pytest.approx(5.0, abs=1e-9)
  assert result['wrist/mpvpe/all'] == pytest.approx((210 + 3) / 778 / 2, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# MRRPE, MIAA, PCK/AUC.


def test_mrrpe_wrist_and_mcp():
  rng = np.random.default_rng(3)
  gt_l, gt_r = rng.normal(size=(2, 4, 21, 3)) * 0.05
  error = np.array([[0.003, 0.004, 0.0]] * 4)  # 5 mm
  offset = (gt_r[:, 0] - gt_l[:, 0] + error) / 0.15
  pd_l, pd_r = rng.normal(size=(2, 4, 21, 3)) * 0.05  # ignored for the wrist
  np.testing.assert_allclose(metrics.mrrpe(gt_l, gt_r, pd_l, pd_r, offset, 0), 0.005, atol=1e-12)
  # MCP: predicted right MCP = pd_r[9] + 0.15 offset; make the predicted MCP vector the GT one + 12 mm.
  offset9 = (gt_r[:, 9] - gt_l[:, 9] - pd_r[:, 9] + pd_l[:, 9] + [0.0, 0.0, 0.012]) / 0.15
  np.testing.assert_allclose(metrics.mrrpe(gt_l, gt_r, pd_l, pd_r, offset9, 9), 0.012, atol=1e-12)


def test_miaa_simple_intrinsics(eval_mano, mano):
  """One joint moved sideways by d at depth z gives f d / z pixels on that joint only."""
  one_hot = one_hot_eval_mano(eval_mano).joint_regressor['left']
  gt, _ = make_batch(mano, 2, seed=4)
  verts = gt['verts_cam_left']
  pred = verts + np.array([0.2, -0.1, 0.05])  # translation, removed by the alignment
  pred[:, 5, 0] += 0.002
  err = metrics.hand_errors(one_hot, verts, pred, gt['intrinsics'], NO_SCALE_WRIST)
  expected = gt['intrinsics'][:, 0, 0] * 0.002 / verts[:, 5, 2]
  np.testing.assert_allclose(err['joint_px'][:, 5], expected, rtol=1e-9)
  np.testing.assert_allclose(np.delete(err['joint_px'], 5, axis=1), 0.0, atol=1e-9)
  np.testing.assert_allclose(err['vert_px'].sum(1), expected, rtol=1e-9)
  assert expected.min() > 1.0


def test_project():
  k = np.array([[500.0, 0, 128], [0, 400.0, 100], [0, 0, 1]])
  np.testing.assert_allclose(metrics.project(np.array([[0.1, -0.05, 0.5]]), k), [[228.0, 60.0]])


def test_pck_step_and_auc():
  errors = np.full((7, 21), 10.0)
  curve = metrics.pck_curve(errors)
  thresholds = np.asarray(metrics.PCK_THRESHOLDS_MM)
  assert len(thresholds) == 101 and thresholds[-1] == 50.0
  np.testing.assert_array_equal(curve, (thresholds >= 10.0).astype(float))
  # Trapezoid rule on the sampled curve (FreiHAND's EvalUtil): 0 up to 9.5 mm, 1 from 10 mm, so
  # (0.5 * 0.5 + 40) / 50 = 0.805 (the exact step-curve area would be 0.8).
  assert metrics.pck_auc(errors) == pytest.approx(0.805, abs=1e-12)
  spread = np.array([0.0, 25.0, 50.0, 75.0])
  # Curve 1/4 on [0, 25), 1/2 on [25, 50), 3/4 at 50; each jump costs a trapezoid of width 0.5 mm:
  # (24.5 / 4 + 0.5 * (1/4 + 1/2) / 2 + 24.5 / 2 + 0.5 * (1/2 + 3/4) / 2) / 50.
  assert metrics.pck_auc(spread) == pytest.approx((6.125 + 0.1875 + 12.25 + 0.3125) / 50, abs=1e-12)
  assert metrics.pck_curve(spread)[50] == 0.5  # threshold 25 mm, inclusive
  # Uniform errors on [0, 50]: PCK(t) = t / 50, AUC = 1/2.
  uniform = np.linspace(0, 50, 100001)
  assert metrics.pck_auc(uniform) == pytest.approx(0.5, abs=1e-4)
  np.testing.assert_allclose(metrics.pck_curve(uniform), thresholds / 50, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# Interpenetration volume of MANO (mesh geometry: tests/test_mesh_volume.py).


def test_mano_wrist_cap(mano, eval_mano):
  for side in metrics.HANDS:
    loops = eval_mano.hole_loops[side]
    assert [len(loop) for loop in loops] == [16]
    verts = mesh_volume.cap_vertices(np.asarray(mano[side].v_template, np.float64), loops)
    mesh = trimesh.Trimesh(verts, eval_mano.closed_faces[side], process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    # The hand overlapping itself: its whole volume, to within the 2 mm voxel layer.
    iv = mesh_volume.interpenetration_volume(
        verts, eval_mano.closed_faces[side], verts, eval_mano.closed_faces[side], voxel_m=0.002
    )
    assert iv == pytest.approx(abs(mesh.volume) * 1e6, rel=0.03)


def test_fixture_mano_cannot_be_capped(fixture_mano_dir, mano):
  """The reference fixture's older synthetic hand is not manifold: no volume, a clear error."""
  closable = metrics.EvalMano.from_pair(load_mano_pair(fixture_mano_dir))
  assert closable.closed_faces is None
  gt, stages = make_batch(mano, 1, seed=5)
  with pytest.raises(ValueError, match='voxel_m=None'):
    metrics.sample_errors(closable, gt, stages[0])
  assert f'{T2}/mrrpe_mm' in metrics.sample_errors(closable, gt, stages[0], voxel_m=None)


# ---------------------------------------------------------------------------------------------------
# Accumulator, stages, report helpers.


def reference_mpjpe(jr, gt_verts, pd_verts, root, scale):
  """An independent loop implementation of one MPJPE number (mm)."""
  errors = []
  for g, p in zip(gt_verts, pd_verts):
    gj, pj = jr @ g, jr @ p
    s = np.linalg.norm(gj[9] - gj[0]) / np.linalg.norm(pj[9] - pj[0]) if scale else 1.0
    errors.append(np.linalg.norm((pj - pj[root]) * s - (gj - gj[root]), axis=1))
  return 1000 * np.mean(errors)


def test_accumulator_with_padding_matches_one_shot(eval_mano, mano):
  gt, stages = make_batch(mano, 5, seed=6)
  one_shot = metrics.stage_metrics(eval_mano, gt, stages)
  acc = metrics.MetricAccumulator(eval_mano)
  for start in range(0, 5, 2):
    idx = np.arange(start, start + 2)
    valid = idx < 5
    take = np.minimum(idx, 4)
    pad = lambda d: {
        k: np.where(valid.reshape((-1,) + (1,) * (np.ndim(v) - 1)), np.asarray(v)[take], 0.0) for k, v in d.items()
    }
    acc.update(pad(gt), [pad(s) for s in stages], valid)
  result = acc.result()
  assert result.keys() == one_shot.keys()
  assert (
      result['protocols']
      == one_shot['protocols']
      == {**{key: p.name for key, p in metrics.SETTINGS.items()}, metrics.PROCRUSTES_KEY: metrics.PROCRUSTES_NAME}
  )
  for key, value in one_shot.items():
    if key != 'protocols':
      np.testing.assert_allclose(result[key], value, rtol=1e-12, err_msg=key)
  assert result['num_samples'] == 5
  json.dumps(result, allow_nan=False)
  assert all(
      isinstance(v, (float, int)) or all(isinstance(x, float) for x in v) for k, v in result.items() if k != 'protocols'
  )

  for s, stage in enumerate(stages):
    for h in metrics.HANDS:
      for name, setting in metrics.SETTINGS.items():
        expected = reference_mpjpe(
            eval_mano.joint_regressor[h],
            gt[f'verts_cam_{h}'],
            stage[f'mesh_xyz_{h}'],
            setting.root_index,
            setting.scaled,
        )
        assert result[f'stage{s}/{name}/mpjpe/{h}'] == pytest.approx(expected, rel=1e-9)
      assert 1.0 < result[f'stage{s}/{T2}/mpjpe/{h}'] < 20.0
    assert result[f'stage{s}/iv/all'] > 1.0  # the hands were placed 3 cm apart
    # Offsets were built so that the predicted wrist-to-wrist vector is 3 cm along x.
    gt_rel = (eval_mano.joint_regressor['right'] @ gt['verts_cam_right'])[:, 0] - (
        eval_mano.joint_regressor['left'] @ gt['verts_cam_left']
    )[:, 0]
    expected_root = 1000 * np.linalg.norm(gt_rel - [0.03, 0.0, 0.0], axis=1).mean()
    assert result[f'stage{s}/{T2}/mrrpe/all'] == pytest.approx(expected_root, rel=1e-9)
  # Stage 1 is scaled by 1.1: the scaled settings hardly notice, the unscaled one does.
  assert result[f'stage1/{T3N}/mpjpe/all'] > result[f'stage1/{T3}/mpjpe/all'] + 3.0


def test_hand_errors_under_jit(eval_mano, mano):
  gt, _ = make_batch(mano, 2, seed=7)
  jr = eval_mano.joint_regressor['left']
  args = (gt['verts_cam_left'], gt['verts_cam_left'] * 1.05 + 0.01, gt['intrinsics'])
  expected = metrics.hand_errors(jr, *args, metrics.SETTINGS[T3])
  fn = jax.jit(lambda *a: metrics.hand_errors(jnp.asarray(jr, jnp.float32), *a, metrics.SETTINGS[T3]))
  got = fn(*(jnp.asarray(a, jnp.float32) for a in args))
  for key in expected:
    np.testing.assert_allclose(got[key], expected[key], atol=0.05, err_msg=key)  # float32 at 0.5 m: ~1e-4 mm


def test_reference_table_and_plot(eval_mano, mano, tmp_path):
  gt, stages = make_batch(mano, 2, seed=8)
  result = metrics.stage_metrics(eval_mano, gt, stages, voxel_m=None)
  reference = report.paper_reference()
  assert reference[f'{T2}/mpjpe/all'] == 10.228 and reference[f'{T2}/mrrpe/all'] == 29.261
  assert report.paper_reference('oct2023')[f'{T2}/miaa_vert/right'] == 5.725
  table = report.markdown_table(result, reference)
  row = next(line for line in table.splitlines() if line.startswith(f'| {DIR_NAME} | mpjpe |'))
  ours = f"{result[f'stage1/{T2}/mpjpe/left']:.3f}"
  assert row.split(' | ')[3] == ours and row.rstrip(' |').endswith('10.733 | 9.722 | 10.228')
  assert f'| {protocol.DIR_MIDDLE_MCP.name} | mpjpe |' in table and 'iv' not in table
  assert metrics.scalar_metrics(result)[f'stage1/{T2}/auc/all'] == result[f'stage1/{T2}/auc/all']
  path = tmp_path / 'pck.png'
  report.pck_plot(result, str(path))
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > 10_000


def _with_triangulated(eval_mano, gt, hand_types):
  """`gt` plus triangulated joints equal to its MANO joints (InterHand2.6M's order), all valid."""
  num = len(gt['intrinsics'])
  joints = np.zeros((num, schema.INTERHAND_NUM_JOINTS, 3))
  for h in metrics.HANDS:
    rows = [schema.INTERHAND_HAND_OFFSET[h] + i for i in schema.DIR_FROM_INTERHAND]
    joints[:, rows] = metrics.regress_joints(eval_mano.joint_regressor[h], gt[f'verts_cam_{h}'])
  return dict(
      gt,
      joint_3d_cam_m=joints,
      joint_3d_valid=np.ones((num, schema.INTERHAND_NUM_JOINTS), bool),
      hand_type=np.asarray([schema.HAND_TYPES.index(t) for t in hand_types]),
  )


def test_triangulated_protocol_scores_valid_joints_of_its_subset(eval_mano, mano):
  """Triangulated joints equal to the MANO joints give the MANO wrist-unscaled errors, averaged per
  joint over the valid ones only; an invalid wrist drops its hand; human_annot keeps listed samples."""
  gt, stages = make_batch(mano, 4, seed=9)
  gt = _with_triangulated(eval_mano, gt, ['interacting'] * 4)
  right_index_tip = schema.INTERHAND_HAND_OFFSET['right'] + schema.DIR_FROM_INTERHAND[8]
  left_wrist = schema.INTERHAND_HAND_OFFSET['left'] + schema.DIR_FROM_INTERHAND[0]
  assert (right_index_tip, left_wrist) == (4, 41)  # InterHand2.6M: r_index4 (tip) is 4, l_wrist is 41
  gt['joint_3d_valid'][:, right_index_tip] = False
  gt['joint_3d_valid'][2, left_wrist] = False
  gt['joint_3d_cam_m'][2, left_wrist] = np.nan  # an invalid joint's coordinates never count
  gt['human_annot'] = np.array([True, False, True, True])
  interacting, human = protocol.INTERHAND26M_INTERACTING, protocol.INTERHAND26M_HUMAN_ANNOT
  result = metrics.stage_metrics(eval_mano, gt, stages, settings={}, voxel_m=None, triangulated=(interacting, human))
  for p, samples in ((interacting, [0, 1, 2, 3]), (human, [0, 2, 3])):
    per_hand = {}
    for h in metrics.HANDS:
      err = metrics.hand_errors(
          eval_mano.joint_regressor[h],
          gt[f'verts_cam_{h}'],
          stages[1][f'mesh_xyz_{h}'],
          gt['intrinsics'],
          NO_SCALE_WRIST,
      )['joint_mm'][samples]
      mask = np.ones_like(err, bool)
      if h == 'right':
        mask[:, 8] = False
      else:
        mask[[i for i, s in enumerate(samples) if s == 2]] = False
      per_hand[h] = [err[mask[:, j], j].mean() for j in range(21) if mask[:, j].any()]
      assert result[f'stage1/{p.key}/mpjpe/{h}'] == pytest.approx(np.mean(per_hand[h]), rel=1e-12)
    assert result[f'stage1/{p.key}/mpjpe/all'] == pytest.approx(
        np.mean(per_hand['left'] + per_hand['right']), rel=1e-12
    )
    assert result[f'stage1/{p.key}/num_samples'] == len(samples)
    assert result[f'stage1/{p.key}/joint_errors_mm/right'][8] is None  # never scored
  assert result['protocols'][human.key] == 'wrist, unscaled, triangulated joints, human_annot'
  table = report.markdown_table(result)
  assert '| wrist, unscaled, triangulated joints, interacting | mpjpe |' in table
  assert '| wrist, unscaled, triangulated joints, human_annot | InterWild | mpjpe_sh_ih_mean | 13.65 |' in table
  assert 'IntagHand' not in table and 'DIR' not in table  # their protocols were not computed here
  json.dumps(result, allow_nan=False)


def _all_config_batch(eval_mano, mano):
  """A batch of the builder's 'all' config: samples 1 and 3 single-hand (right, left), the others
  interacting; sample 4's left wrist invalid."""
  gt, stages = make_batch(mano, 5, seed=11)
  hand_types = ['interacting', 'right', 'interacting', 'left', 'interacting']
  gt = _with_triangulated(eval_mano, gt, hand_types)
  for i, t in enumerate(hand_types):
    if t != 'interacting':
      other = 'left' if t == 'right' else 'right'
      gt[f'verts_cam_{other}'][i] = 0.0  # no MANO: all-zero parameters give some mesh; never scored
      start = schema.INTERHAND_HAND_OFFSET[other]
      gt['joint_3d_valid'][i, start : start + 21] = False
  left_wrist = schema.INTERHAND_HAND_OFFSET['left'] + schema.DIR_FROM_INTERHAND[0]
  gt['joint_3d_valid'][4, left_wrist] = False  # sample 4: no MRRPE, left hand not scored
  return gt, stages


def test_single_hand_samples_in_a_batch(eval_mano, mano):
  """A batch of the builder's 'all' config: MANO-joint numbers (and Procrustes, interpenetration) are
  exactly those of its interacting samples alone; the triangulated single and all subsets score the
  named hand of each single sample (the other's joints are invalid, its MANO arbitrary); the
  triangulated MRRPE counts interacting samples whose two wrists are valid, computed by hand."""
  gt, stages = _all_config_batch(eval_mano, mano)
  both, single = protocol.INTERHAND26M, protocol.INTERHAND26M_SINGLE
  result = metrics.stage_metrics(eval_mano, gt, stages, voxel_m=0.01, triangulated=(both, single))
  rows = [0, 2, 4]
  only = metrics.stage_metrics(
      eval_mano,
      {k: np.asarray(v)[rows] for k, v in gt.items()},
      [{k: v[rows] for k, v in s.items()} for s in stages],
      voxel_m=0.01,
      triangulated=(),
  )
  for key, value in only.items():
    if key.startswith('stage') and 'triangulated' not in key:
      assert result[key] == value, key
  assert result[f'stage1/{T2}/num_samples'] == 3 and result['num_samples'] == 5
  with np.errstate(invalid='ignore'):  # the zeroed meshes project to 0/0 (their pixel errors are unused)
    err = {
        h: metrics.hand_errors(
            eval_mano.joint_regressor[h],
            gt[f'verts_cam_{h}'],
            stages[1][f'mesh_xyz_{h}'],
            gt['intrinsics'],
            NO_SCALE_WRIST,
        )['joint_mm']
        for h in metrics.HANDS
    }
  for p, samples in ((both, {'left': [0, 2, 3], 'right': [0, 1, 2, 4]}), (single, {'left': [3], 'right': [1]})):
    assert result[f'stage1/{p.key}/num_samples'] == (5 if p is both else 2)
    per_joint = []
    for h in metrics.HANDS:
      assert result[f'stage1/{p.key}/mpjpe/{h}'] == pytest.approx(err[h][samples[h]].mean(), rel=1e-12)
      per_joint += list(err[h][samples[h]].mean(axis=0))
    assert result[f'stage1/{p.key}/mpjpe/all'] == pytest.approx(np.mean(per_joint), rel=1e-12)
  # InterWild's all-sequences MPJPE: the 42 per-joint means over the single-hand samples (right from
  # 1, left from 3) and the 42 over the interacting ones (right from 0, 2, 4; left from 0, 2), averaged.
  sequences = [
      err['right'][[1]].mean(0),
      err['left'][[3]].mean(0),
      err['right'][[0, 2, 4]].mean(0),
      err['left'][[0, 2]].mean(0),
  ]
  assert result[f'stage1/{both.key}/mpjpe_sh_ih_mean/all'] == pytest.approx(np.mean(sequences), rel=1e-12)
  assert result[f'stage1/{both.key}/mpjpe_sh_ih_mean/all'] != pytest.approx(result[f'stage1/{both.key}/mpjpe/all'])
  assert f'stage1/{single.key}/mpjpe_sh_ih_mean/all' not in result  # one kind of sample only
  assert '| wrist, unscaled, triangulated joints, all | mpjpe_sh_ih_mean | mm |' in report.markdown_table(result)
  # MRRPE on triangulated wrists: interacting samples 0 and 2 (4 has no left wrist, 1 and 3 one hand).
  joints = {h: schema.interhand_joints_in_dir_order(gt['joint_3d_cam_m'], h) for h in metrics.HANDS}
  relative_mm = [
      1000
      * np.linalg.norm((joints['right'][i, 0] - joints['left'][i, 0]) - metrics.OFFSET_UNIT_M * stages[1]['offset'][i])
      for i in (0, 2)
  ]
  assert result[f'stage1/{both.key}/mrrpe/all'] == pytest.approx(np.mean(relative_mm), rel=1e-12)
  assert f'stage1/{single.key}/mrrpe/all' not in result  # no interacting sample in the subset
  json.dumps(result, allow_nan=False)


def test_interpenetration_on_the_device_equals_the_host_volume(eval_mano, mano):
  """`make_interpenetration_fn` (jitted, vmapped, float32 as the network predicts) counts the voxels the
  host's `sample_errors` counts, and the accumulator takes it instead of computing its own."""
  gt, stages = make_batch(mano, 4, seed=7)
  for stage in stages:  # the right hand's centroid 1 cm from the left one's: the hands interpenetrate
    centroids = stage['mesh_xyz_left'].mean(1) - stage['mesh_xyz_right'].mean(1)
    stage['offset'] = (np.full((4, 3), [0.01, 0.0, 0.0]) + centroids) / metrics.OFFSET_UNIT_M
  voxel_m = 0.005
  device_fn = jax.jit(jax.vmap(metrics.make_interpenetration_fn(eval_mano, voxel_m)))
  with_device = []
  for stage in stages:
    as_predicted = {k: np.asarray(v, np.float32) for k, v in stage.items()}
    iv_cm3 = np.asarray(
        device_fn(as_predicted['mesh_xyz_left'], as_predicted['mesh_xyz_right'], as_predicted['offset'])
    )
    host = metrics.sample_errors(eval_mano, gt, as_predicted, {'wrist': NO_SCALE_WRIST}, voxel_m=voxel_m)['iv_cm3']
    assert np.all(host > 0), host  # the batch's hands overlap: the comparison is not one of zeros
    np.testing.assert_allclose(iv_cm3, host, rtol=1e-6)
    with_device.append(dict(as_predicted, iv_cm3=iv_cm3))
  host_stages = [{k: np.asarray(v, np.float32) for k, v in stage.items()} for stage in stages]
  on_host = metrics.stage_metrics(eval_mano, gt, host_stages, voxel_m=voxel_m, triangulated=())
  on_device = metrics.stage_metrics(eval_mano, gt, with_device, voxel_m=voxel_m, triangulated=())
  assert on_device.keys() == on_host.keys()
  for key in on_host:
    if isinstance(on_host[key], float):
      np.testing.assert_allclose(on_device[key], on_host[key], rtol=1e-6, err_msg=key)


def test_errors_on_the_device_equal_the_host_errors(eval_mano, mano):
  """The evaluation step's per-sample errors (`make_row_errors_fn`, jitted, float32) give the metrics the
  host computes in float64 from the meshes, for every protocol kind at once: MANO joints with and
  without scale, Procrustes, triangulated joints on the interacting, single, all and human_annot
  subsets, MRRPE, MIAA and the interpenetration volume, on a batch mixing single-hand and
  interacting samples with padding rows."""
  gt, stages = _all_config_batch(eval_mano, mano)
  gt['human_annot'] = np.array([True, True, False, True, True])
  for stage in stages:  # the hands 1 cm apart: a volume that is not zero
    centroids = stage['mesh_xyz_left'].mean(1) - stage['mesh_xyz_right'].mean(1)
    stage['offset'] = (np.full((5, 3), [0.01, 0.0, 0.0]) + centroids) / metrics.OFFSET_UNIT_M
  stages = [{k: np.asarray(v, np.float32) for k, v in stage.items()} for stage in stages]
  valid = np.array([True, True, True, True, False])
  triangulated = (
      protocol.INTERHAND26M,
      protocol.INTERHAND26M_INTERACTING,
      protocol.INTERHAND26M_SINGLE,
      protocol.INTERHAND26M_HUMAN_ANNOT,
  )
  voxel_m = 0.01
  on_host = metrics.stage_metrics(eval_mano, gt, stages, valid, voxel_m=voxel_m, triangulated=triangulated)
  errors_fn = jax.jit(metrics.make_row_errors_fn(eval_mano, metrics.SETTINGS, triangulated, voxel_m))
  device_gt = {k: jnp.asarray(v, jnp.float32 if np.asarray(v).dtype == np.float64 else None) for k, v in gt.items()}
  rows = jax.device_get([errors_fn(device_gt, {k: jnp.asarray(v) for k, v in stage.items()}) for stage in stages])
  acc = metrics.MetricAccumulator()
  acc.update_rows(rows, valid)
  on_device = acc.result()
  assert on_device.keys() == on_host.keys()
  assert on_host['stage1/iv/all'] > 0 and on_host[f'stage1/{protocol.INTERHAND26M_HUMAN_ANNOT.key}/num_samples'] == 3
  for key, value in on_host.items():
    if isinstance(value, (int, float)) and 'auc' not in key:
      np.testing.assert_allclose(on_device[key], value, rtol=1e-5, atol=1e-3, err_msg=key)
    elif key.endswith(('/pck/all', '/auc/all')):  # a float32 error may cross a 0.5 mm threshold
      np.testing.assert_allclose(on_device[key], value, atol=0.02, err_msg=key)


def test_device_interpenetration_needs_closable_faces(eval_mano):
  open_mano = metrics.EvalMano(eval_mano.joint_regressor, None, None)
  with pytest.raises(ValueError, match='voxel_m=None'):
    metrics.make_interpenetration_fn(open_mano)
