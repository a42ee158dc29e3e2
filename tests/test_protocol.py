"""Evaluation protocols against hand-computed cases: names and keys, validity masks, root and scale
choices, Procrustes alignment, subsets and the trapezoid AUC."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from dir_jax import metrics, protocol
from dir_jax.protocol import Protocol

ALL_PROTOCOLS = [
    Protocol(r, s, g, u)
    for r, s, g, u in itertools.product(protocol.ROOTS, (True, False), protocol.GT_JOINTS, protocol.SUBSETS)
]


def _hand(seed: int, n: int = 1) -> np.ndarray:
  """(n, 21, 3) joints in metres: a hand-sized random cloud 0.5 m in front of the camera."""
  rng = np.random.default_rng(seed)
  return rng.normal(scale=0.04, size=(n, 21, 3)) + np.array([0.0, 0.0, 0.5])


def _rotation(seed: int) -> np.ndarray:
  """A random (3, 3) rotation, det +1."""
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  q = q * np.sign(np.diag(r))
  return q if np.linalg.det(q) > 0 else -q


# ---------------------------------------------------------------------------------------------------
# Names, keys, constants.


def test_names_and_keys_in_words():
  assert protocol.DIR.name == 'wrist, scaled, MANO joints, interacting'
  assert protocol.DIR.key == 'wrist-scaled-mano-interacting'
  p = Protocol('middle_mcp', False, 'triangulated', 'human_annot')
  assert p.name == 'middle MCP, unscaled, triangulated joints, human_annot'
  assert p.key == 'middle_mcp-unscaled-triangulated-human_annot'
  assert str(p) == p.name
  assert protocol.INTERHAND26M.name == 'wrist, unscaled, triangulated joints, all'


@pytest.mark.parametrize('p', ALL_PROTOCOLS, ids=lambda p: p.key)
def test_key_round_trip(p):
  assert Protocol.parse(p.key) == p
  assert Protocol.parse(f'  {p.key}\n') == p


def test_names_and_keys_are_unique():
  assert len({p.name for p in ALL_PROTOCOLS}) == len({p.key for p in ALL_PROTOCOLS}) == 32
  assert len(set(protocol.DEFAULT_PROTOCOLS)) == len(protocol.DEFAULT_PROTOCOLS)


@pytest.mark.parametrize(
    'text, named',
    [
        ('wrist-scaled-mano', 'ROOT-SCALING-GTJOINTS-SUBSET'),
        ('wrist-scaled-mano-interacting-extra', 'ROOT-SCALING-GTJOINTS-SUBSET'),
        ('elbow-scaled-mano-all', "'middle_mcp'"),
        ('wrist-yes-mano-all', "'unscaled'"),
        ('wrist-scaled-smplx-all', "'triangulated'"),
        ('wrist-scaled-mano-both', "'human_annot'"),
        ('wrist, scaled, MANO joints, interacting', 'ROOT-SCALING-GTJOINTS-SUBSET'),  # a name, not a key
    ],
)
def test_parse_refuses_bad_keys_naming_valid_values(text, named):
  with pytest.raises(ValueError, match='protocol key') as info:
    Protocol.parse(text)
  assert named in str(info.value)


def test_constructor_refuses_bad_values():
  with pytest.raises(ValueError, match="'wrist', 'middle_mcp'"):
    Protocol('thumb', True, 'mano', 'all')
  with pytest.raises(ValueError, match='scaled must be True or False'):
    Protocol('wrist', 'yes', 'mano', 'all')
  with pytest.raises(ValueError, match="'mano', 'triangulated'"):
    Protocol('wrist', True, 'fitted', 'all')
  with pytest.raises(ValueError, match="'interacting', 'single', 'all', 'human_annot'"):
    Protocol('wrist', True, 'mano', 'test')


def test_joint_indices_and_settings_match_metrics():
  assert protocol.WRIST == 0 and protocol.MIDDLE_MCP == 9
  assert protocol.SCALE_BONE == metrics.BONE_JOINTS
  assert Protocol('middle_mcp', True, 'mano', 'all').root_index == 9
  assert Protocol('wrist', False, 'mano', 'all').scale_bone is None
  assert list(metrics.SETTINGS) == [
      'wrist-scaled-mano-interacting',
      'middle_mcp-scaled-mano-interacting',
      'middle_mcp-unscaled-mano-interacting',
  ]
  for key, p in metrics.SETTINGS.items():
    assert p.key == key and (p.gt_joints, p.subset) == ('mano', 'interacting')
  assert protocol.DIR in protocol.DEFAULT_PROTOCOLS and protocol.INTERHAND26M in protocol.DEFAULT_PROTOCOLS


@pytest.mark.parametrize('setting', list(metrics.SETTINGS))
def test_aligned_errors_match_metrics_alignment(setting):
  """With every joint valid, the protocol's errors are metrics.hand_errors' joint errors."""
  gt, pred = _hand(1, 4), _hand(2, 4)
  s = metrics.SETTINGS[setting]
  scale = metrics.bone_length_scale(gt, pred) if s.scaled else 1.0
  gt_rel, _ = metrics.root_align(gt, gt, s.root_index)
  pred_rel, _ = metrics.root_align(pred, pred, s.root_index, scale)
  expected = 1000.0 * np.linalg.norm(pred_rel - gt_rel, axis=-1)
  got = protocol.protocol_errors_mm(s, pred, gt)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# Validity masks.


def _offset_case():
  """Three samples whose unscaled wrist-aligned error at joint j is exactly j mm."""
  gt = _hand(3, 3)
  offsets = np.zeros((3, 21, 3))
  offsets[:, :, 0] = 0.001 * np.arange(21)  # joint j moved j mm along x; the wrist (j = 0) not
  return gt + offsets + np.array([0.1, -0.2, 0.05]), gt  # plus a translation, removed by the root


def test_validity_mask_excludes_exactly_the_masked_joints():
  pred, gt = _offset_case()
  valid = np.ones((3, 21), bool)
  valid[0, [3, 7]] = False  # two joints of sample 0
  valid[1, 0] = False  # the wrist of sample 1: its whole hand is invalid
  gt[0, 3] = np.nan  # invalid GT may hold anything; it must not leak
  gt[1, 5] = np.inf
  errors = protocol.aligned_errors_mm(pred, gt, valid, protocol.WRIST, None)
  expected = np.tile(np.arange(21.0), (3, 1))
  expected[0, [3, 7]] = np.nan
  expected[1] = np.nan
  np.testing.assert_allclose(errors, expected, atol=1e-9)
  # Pooled: (210 - 3 - 7 + 210) / (19 + 21) = 10.25 mm. Per joint first (InterHand2.6M): joints 3
  # and 7 have sample 2 only, every other joint samples 0 and 2; each joint's mean is j -> 10 mm.
  assert protocol.masked_mpjpe_mm(errors) == pytest.approx(410 / 40, abs=1e-9)
  assert protocol.masked_mpjpe_mm(errors, per_joint=True) == pytest.approx(10.0, abs=1e-9)
  assert np.isnan(protocol.masked_mpjpe_mm(np.full((2, 21), np.nan)))


def test_invalid_root_or_scale_bone_invalidates_the_hand():
  valid = np.ones((3, 21), bool)
  valid[0, 0] = False  # wrist
  valid[1, 9] = False  # middle MCP
  valid[2, 4] = False  # a thumb tip
  wrist_unscaled = protocol.effective_validity(valid, protocol.WRIST)
  assert not wrist_unscaled[0].any()
  np.testing.assert_array_equal(wrist_unscaled[1:], valid[1:])  # only joint 9 of sample 1 goes
  middle_unscaled = protocol.effective_validity(valid, protocol.MIDDLE_MCP)
  assert not middle_unscaled[1].any() and middle_unscaled[0].sum() == 20
  scaled = protocol.effective_validity(valid, protocol.WRIST, protocol.SCALE_BONE)
  assert scaled.sum(1).tolist() == [0, 0, 20]  # no GT bone, no scale: the hand goes


def test_triangulated_protocol_needs_validity():
  pred, gt = _offset_case()
  with pytest.raises(ValueError, match='needs the GT joint validity'):
    protocol.protocol_errors_mm(protocol.INTERHAND26M, pred, gt)
  errors = protocol.protocol_errors_mm(protocol.INTERHAND26M, pred, gt, np.ones((3, 21), bool))
  np.testing.assert_allclose(errors, np.tile(np.arange(21.0), (3, 1)), atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# Root and scale.


def test_scaled_vs_unscaled_on_a_hand_scaled_by_two():
  gt = _hand(4)
  gt[0, 9] = gt[0, 0] + [0.0, 0.08, 0.0]  # middle MCP 80 mm above the wrist
  pred = gt[:, :1] + 2.0 * (gt - gt[:, :1]) + [0.3, 0.1, -0.2]  # x2 about the wrist, then moved
  scaled = protocol.aligned_errors_mm(pred, gt, None, protocol.WRIST, protocol.SCALE_BONE)
  np.testing.assert_allclose(scaled, 0.0, atol=1e-9)
  unscaled = protocol.aligned_errors_mm(pred, gt, None, protocol.WRIST, None)
  assert unscaled[0, 9] == pytest.approx(80.0, abs=1e-9)  # 2 * 80 - 80
  np.testing.assert_allclose(unscaled, 1000.0 * np.linalg.norm(gt - gt[:, :1], axis=-1), atol=1e-9)


def test_middle_mcp_vs_wrist_root_by_hand():
  """Translated prediction with the wrist moved by (3, 4, 0) mm and the middle MCP by (0, 0, 12) mm.

  Wrist root: the wrist 0, the middle MCP |(0, 0, 12) - (3, 4, 0)| = 13, the 19 others |(3, 4, 0)| = 5.
  Middle-MCP root: the middle MCP 0, the wrist 13, the 19 others |(0, 0, 12)| = 12.
  """
  gt = _hand(5, 2)
  pred = gt + [0.2, -0.1, 0.3]
  pred[:, 0] += [0.003, 0.004, 0.0]
  pred[:, 9] += [0.0, 0.0, 0.012]
  wrist = protocol.protocol_errors_mm(Protocol('wrist', False, 'mano', 'all'), pred, gt)
  middle = protocol.protocol_errors_mm(Protocol('middle_mcp', False, 'mano', 'all'), pred, gt)
  expected_wrist = np.full((2, 21), 5.0)
  expected_wrist[:, 0], expected_wrist[:, 9] = 0.0, 13.0
  expected_middle = np.full((2, 21), 12.0)
  expected_middle[:, 0], expected_middle[:, 9] = 13.0, 0.0
  np.testing.assert_allclose(wrist, expected_wrist, atol=1e-9)
  np.testing.assert_allclose(middle, expected_middle, atol=1e-9)
  assert protocol.masked_mpjpe_mm(wrist) == pytest.approx((19 * 5 + 13) / 21, abs=1e-9)
  assert protocol.masked_mpjpe_mm(middle) == pytest.approx((19 * 12 + 13) / 21, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# Procrustes.


def test_procrustes_recovers_a_similarity_transform():
  gt = _hand(6, 3)
  pred = np.stack([(gt[i] - 0.1) @ _rotation(i).T * s + [0.5, -0.3, 0.2] for i, s in enumerate((0.5, 1.7, 3.0))])
  np.testing.assert_allclose(protocol.procrustes_align(pred, gt), gt, atol=1e-12)
  np.testing.assert_allclose(protocol.procrustes_errors_mm(pred, gt), 0.0, atol=1e-9)
  assert protocol.pa_mpjpe_mm(pred, gt) == pytest.approx(0.0, abs=1e-9)
  verts = np.random.default_rng(7).normal(scale=0.05, size=(2, 778, 3))
  moved = 1.3 * verts @ _rotation(8).T + 0.4
  assert protocol.pa_mpvpe_mm(moved, verts) == pytest.approx(0.0, abs=1e-9)


def test_procrustes_three_points_by_hand():
  """pred A(-1, 0), B(1, 0), C(0, 1); gt A(-1, 0), B(1, 0), C(0, 3) (units of 1 cm, z = 0).

  Centred (centroids (0, 1/3), (0, 1)): the covariance is diag(2/3, 2/3, 0), so R = I,
  s = (4/3) / var_pred with var_pred = 8/9, s = 1.5; the aligned points (-1.5, 0.5), (1.5, 0.5),
  (0, 2) miss the GT by sqrt(0.5), sqrt(0.5) and 1 cm.
  """
  pred = 0.01 * np.array([[-1.0, 0, 0], [1, 0, 0], [0, 1, 0]])
  gt = 0.01 * np.array([[-1.0, 0, 0], [1, 0, 0], [0, 3, 0]])
  expected = 10.0 * np.array([np.sqrt(0.5), np.sqrt(0.5), 1.0])
  np.testing.assert_allclose(protocol.procrustes_errors_mm(pred, gt), expected, atol=1e-9)
  np.testing.assert_allclose(
      protocol.procrustes_align(pred, gt), 0.01 * np.array([[-1.5, 0.5, 0], [1.5, 0.5, 0], [0, 2, 0]]), atol=1e-12
  )
  # The same error whatever rigid motion and scale the prediction starts from.
  moved = 0.7 * pred @ _rotation(9).T + [0.1, 0.2, 0.3]
  np.testing.assert_allclose(protocol.procrustes_errors_mm(moved, gt), expected, atol=1e-9)
  assert protocol.pa_mpjpe_mm(moved[None], gt[None]) == pytest.approx((20 * np.sqrt(0.5) + 10) / 3, abs=1e-9)


def test_procrustes_refuses_reflections():
  """A mirrored, non-planar point set: a reflection would fit it exactly, a rotation cannot."""
  pred = np.array([[0.0, 0, 0], [0.05, 0, 0], [0, 0.05, 0], [0, 0, 0.05]])
  gt = pred * [-1.0, 1.0, 1.0]
  aligned = protocol.procrustes_align(pred, gt)
  # The fitted map, read off the aligned (centred) points, has det > 0.
  x, y = pred - pred.mean(0), aligned - aligned.mean(0)
  linear = np.linalg.lstsq(x, y, rcond=None)[0]
  assert np.linalg.det(linear) > 0
  assert protocol.procrustes_errors_mm(pred, gt).mean() > 5.0


def test_procrustes_fits_valid_points_only():
  gt = _hand(10)
  pred = 1.2 * gt @ _rotation(11).T
  pred[0, 0] += [0.02, 0.0, 0.0]  # a perturbed wrist, fitted
  pred_bad = pred.copy()
  pred_bad[0, 5] = np.nan  # an invalid joint holding garbage
  valid = np.ones((1, 21), bool)
  valid[0, 5] = False
  keep = np.arange(21) != 5
  errors = protocol.procrustes_errors_mm(pred_bad, gt, valid)
  assert np.isnan(errors[0, 5])
  np.testing.assert_allclose(errors[0, keep], protocol.procrustes_errors_mm(pred[:, keep], gt[:, keep])[0], atol=1e-9)
  assert np.all(np.isnan(protocol.procrustes_errors_mm(pred, gt, np.zeros((1, 21), bool))))


# ---------------------------------------------------------------------------------------------------
# Subsets.


def test_subset_masks():
  is_interacting = np.array([False, True, False, True])
  human = [True, False, False, True]
  assert protocol.subset_mask('interacting', is_interacting).tolist() == [False, True, False, True]
  assert protocol.subset_mask('single', is_interacting).tolist() == [True, False, True, False]
  assert protocol.subset_mask('all', is_interacting).tolist() == [True] * 4
  assert protocol.subset_mask('human_annot', is_interacting, human).tolist() == human
  assert protocol.subset_mask('single', jnp.asarray(is_interacting)).tolist() == [True, False, True, False]
  with pytest.raises(ValueError, match='human_annot flags'):
    protocol.subset_mask('human_annot', is_interacting)
  with pytest.raises(ValueError, match='subset must be one of'):
    protocol.subset_mask('val', is_interacting)


# ---------------------------------------------------------------------------------------------------
# Trapezoid AUC.


def test_trapezoid_auc_on_a_tiny_grid_by_hand():
  """Errors 5, 10, 30 mm (and one invalid) at thresholds 0, 10, 20 mm: PCK 0, 2/3, 2/3 (10 <= 10).

  Trapezoids: 10 * (0 + 2/3) / 2 + 10 * 2/3 = 10, over 20: 0.5 (the exact step-curve area would be
  (15 + 10 + 0) / 60 = 0.4167). At thresholds 0, 4, 20: PCK 0, 0, 2/3 -> 16 * (2/3) / 2 / 20 = 4/15.
  """
  errors = np.array([5.0, 10.0, 30.0, np.nan])
  np.testing.assert_allclose(protocol.pck_curve_masked(errors, (0, 10, 20)), [0, 2 / 3, 2 / 3])
  assert protocol.pck_auc_trapezoid(errors, (0.0, 10.0, 20.0)) == pytest.approx(0.5, abs=1e-12)
  assert protocol.pck_auc_trapezoid(errors[:3], (0.0, 10.0, 20.0)) == pytest.approx(0.5, abs=1e-12)
  assert protocol.pck_auc_trapezoid(errors, (0.0, 4.0, 20.0)) == pytest.approx(4 / 15, abs=1e-12)
  assert metrics.pck_auc(errors, (0.0, 10.0, 20.0)) == pytest.approx(0.5, abs=1e-12)


def test_trapezoid_auc_per_joint_as_evalutil():
  """Joint 0 has errors 5 and 10 (PCK 0, 1, 1: AUC (5 + 10) / 20 = 0.75), joint 1 only 30 (AUC 0)
  after its other entry is invalid: per joint (0.75 + 0) / 2 = 0.375, pooled 0.5."""
  errors = np.array([[5.0, np.nan], [10.0, 30.0]])
  assert protocol.pck_auc_trapezoid(errors, (0.0, 10.0, 20.0), per_joint=True) == pytest.approx(0.375)
  assert protocol.pck_auc_trapezoid(errors, (0.0, 10.0, 20.0)) == pytest.approx(0.5)
  full = np.random.default_rng(12).gamma(4.0, 3.0, size=(50, 21))  # every joint valid: the same
  assert protocol.pck_auc_trapezoid(full, metrics.PCK_THRESHOLDS_MM, per_joint=True) == pytest.approx(
      protocol.pck_auc_trapezoid(full, metrics.PCK_THRESHOLDS_MM), abs=1e-12
  )


def test_trapezoid_auc_refusals():
  with pytest.raises(ValueError, match='no valid'):
    protocol.pck_auc_trapezoid(np.full(4, np.nan), (0.0, 10.0))
  with pytest.raises(ValueError, match='increasing'):
    protocol.pck_auc_trapezoid(np.ones(4), (10.0, 0.0))
  with pytest.raises(ValueError, match='increasing'):
    protocol.pck_auc_trapezoid(np.ones(4), (10.0,))


def test_threshold_grids():
  """dir-jax's 0-50 mm grid in 0.5 mm steps against FreiHAND eval.py's 100 thresholds over 0-50 mm.

  On errors spread like a model's (gamma, means 5-30 mm) the two trapezoid AUCs agree to 1e-4 and
  each is within 1e-4 of the exact step-curve area; errors all on one threshold are the worst case
  (half a step over the range: 0.005 vs 0.00505).
  """
  ours, freihand = np.asarray(metrics.PCK_THRESHOLDS_MM), np.asarray(protocol.FREIHAND_PCK_THRESHOLDS_MM)
  assert len(ours) == 101 and len(freihand) == 100 and ours[-1] == freihand[-1] == 50.0
  assert np.diff(freihand)[0] == pytest.approx(50 / 99)
  rng = np.random.default_rng(13)
  for mean_mm in (5.0, 12.0, 30.0):
    errors = rng.gamma(4.0, mean_mm / 4, size=(2000, 21))
    exact = np.clip((50.0 - errors) / 50.0, 0.0, 1.0).mean()
    auc_ours = protocol.pck_auc_trapezoid(errors, ours)
    auc_freihand = protocol.pck_auc_trapezoid(errors, freihand)
    assert abs(auc_ours - auc_freihand) < 1e-4 and abs(auc_ours - exact) < 1e-4
  on_threshold = np.full(10, 10.0)
  assert protocol.pck_auc_trapezoid(on_threshold, ours) == pytest.approx(0.8 + 0.005)
  # 10 mm lies between FreiHAND's thresholds 19 * 50/99 and 20 * 50/99 mm: one half trapezoid of
  # 50/99 mm, then 1 from 1000/99 to 50 mm: (25/99 + 3950/99) / 50 = 3975/4950.
  assert protocol.pck_auc_trapezoid(on_threshold, freihand) == pytest.approx(3975 / 4950, abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# Choosing protocols for an evaluation, and the human_annot list.


def test_choose_protocols_defaults_and_refusals():
  settings, triangulated = metrics.choose_protocols(None, True, 'DATA')
  assert settings == metrics.SETTINGS and triangulated == metrics.TRIANGULATED
  assert metrics.choose_protocols(None, False, 'DATA') == (metrics.SETTINGS, ())
  settings, triangulated = metrics.choose_protocols(
      ['middle_mcp-scaled-mano-interacting', 'wrist-unscaled-triangulated-human_annot'], True, 'DATA'
  )
  assert list(settings) == ['middle_mcp-scaled-mano-interacting']
  assert triangulated == (protocol.INTERHAND26M_HUMAN_ANNOT,)
  with pytest.raises(ValueError, match='single-hand and all-frames subsets have no examples'):
    metrics.choose_protocols(['wrist-unscaled-triangulated-all'], True, 'DATA')
  with pytest.raises(ValueError, match='MANO joints are computed on the interacting subset'):
    metrics.choose_protocols(['wrist-scaled-mano-human_annot'], True, 'DATA')
  with pytest.raises(ValueError, match='DATA does not store: convert the dataset again with interhand26m 1.1.0'):
    metrics.choose_protocols(['wrist-unscaled-triangulated-interacting'], False, 'DATA')
  with pytest.raises(ValueError, match='ROOT-SCALING-GTJOINTS-SUBSET'):
    metrics.choose_protocols(['table2'], True, 'DATA')


def test_read_annotation_ids(tmp_path):
  path = tmp_path / 'aid_human_annot_test.txt'
  path.write_text('12\n\n  7 \n12\n')
  assert protocol.read_annotation_ids(str(path)) == {7, 12}
  with pytest.raises(ValueError, match='needs --human_annot'):
    protocol.read_annotation_ids(None, '--human_annot')
  with pytest.raises(ValueError, match='cannot be read'):
    protocol.read_annotation_ids(str(tmp_path / 'missing.txt'))
  path.write_text('12\nimage7.jpg\n')
  with pytest.raises(ValueError, match=r"line 2: 'image7.jpg' is not an annotation id"):
    protocol.read_annotation_ids(str(path))
  path.write_text('\n')
  with pytest.raises(ValueError, match='no annotation id'):
    protocol.read_annotation_ids(str(path))


def test_choose_protocols_on_data_with_single_hands():
  """The builder's 'all' config: the single-hand and all-frames subsets are defaults and accepted."""
  settings, triangulated = metrics.choose_protocols(None, True, 'DATA', has_single_hand=True)
  assert settings == metrics.SETTINGS and triangulated == metrics.TRIANGULATED_WITH_SINGLE
  assert {p.subset for p in triangulated} == {'all', 'interacting', 'single'}
  _, triangulated = metrics.choose_protocols(['wrist-unscaled-triangulated-single'], True, 'DATA', True)
  assert triangulated == (protocol.INTERHAND26M_SINGLE,)
  with pytest.raises(ValueError, match='MANO joints are computed on the interacting subset'):
    metrics.choose_protocols(['wrist-scaled-mano-all'], True, 'DATA', True)
