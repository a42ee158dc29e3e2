"""Evaluation metrics of DIR (docs/architecture.md#metrics): MPJPE, MPVPE, MRRPE, MIAA, PCK/AUC and interpenetration volume.

Pure functions on arrays, no model inside. The evaluation follows the authors' apps/eval.py:
- Joints of both the ground truth and the prediction are regressed from vertices with the 21-row
  evaluation regressor `eval_joint_regressor` (docs/quirks.md#q24), not taken from the network.
- Alignment (per hand, per sample) at a root joint: the GT root is subtracted from the GT and the
  predicted root from the prediction; optionally the prediction is then scaled by the bone-length
  ratio ||J9 - J0||_gt / ||J9 - J0||_pred. Every number belongs to a protocol
  (`dir_jax.protocol.Protocol`: root x scaling x MANO or triangulated joints x subset), keyed by
  `Protocol.key` and named in words in the result's 'protocols'. `SETTINGS` holds the protocols on
  MANO joints of the paper's Table 2 (wrist + scale, also the README's) and Table 3 (middle MCP,
  with and without scale); PROCRUSTES_KEY the Procrustes-aligned errors; `TRIANGULATED` the
  protocols on InterHand2.6M's triangulated joints, computed when the data carries them.
- Errors are per joint / vertex L2 distances, concatenated over the dataset; joint errors are
  averaged per joint over the samples where the joint is scored, then over the joints (exact means
  when every joint is scored); 'all' is the mean over both hands.

Inputs (one batch of B samples):
  gt:   'verts_cam_left', 'verts_cam_right' (B, 778, 3) metres, camera frame;
        'intrinsics' (B, 3, 3) crop intrinsics (pixels of the 256 crop).
  pred: one stage result of `dir_jax.model.dir.DIR`: 'mesh_xyz_left', 'mesh_xyz_right' (B, 778, 3)
        metres, root-relative; 'offset' (B, 3) right root minus left root in units of 0.15 m.

Result keys: '{stage}/{protocol key}/{metric}/{hand}' with metric in mpjpe, mpvpe (mm), miaa_joint,
miaa_vert (pixels), auc (in [0, 1]), pck (list of fractions at 'pck_thresholds_mm'), hand in left,
right, all; '{stage}/{key}/joint_errors_mm/{left,right}' (21 per-joint means, DIR's joint order,
None where a joint is never scored);
'{stage}/{key}/num_samples'; '{stage}/{key}/mrrpe/all' (mm); on triangulated protocols whose
samples include single-hand and interacting ones '{stage}/{key}/mpjpe_sh_ih_mean/all' (InterWild's
averaging, `summarize`); '{stage}/iv/all' (cm^3, when computed); 'num_samples', 'pck_thresholds_mm' and 'protocols' ({key: name}). All values are plain
Python numbers, lists or dicts (JSON-ready).

The interpenetration volume's mesh geometry lives in `dir_jax.mesh_volume`; reports of a result dict
(reference numbers, Markdown table, PCK plot) in `dir_jax.report`.
"""

import dataclasses
import logging
import math
from typing import Mapping, Sequence

import jax
import numpy as np

from dir_jax import mesh_volume, protocol
from dir_jax.data import schema
from dir_jax.mano import constants
from dir_jax.mano.asset import ManoAsset, ManoPair
from dir_jax.model.config import OFFSET_UNIT_M

HANDS = constants.SIDES  # the order every per-hand result uses
GT_KEYS = ('verts_cam_left', 'verts_cam_right', 'intrinsics')  # see the module docstring
TRIANGULATED_GT_KEYS = ('joint_3d_cam_m', 'joint_3d_valid', 'hand_type')  # plus 'human_annot' when known
PRED_KEYS = ('mesh_xyz_left', 'mesh_xyz_right', 'offset')
BONE_JOINTS = (0, 9)  # wrist and middle-finger MCP: the bone whose length sets the scale
PCK_THRESHOLDS_MM = tuple(np.linspace(0.0, 50.0, 101).tolist())  # 0, 0.5, ..., 50 mm

log = logging.getLogger(__name__)


# The protocols on joints regressed from the GT MANO mesh, by key: the paper's Table 2 (wrist +
# scale: apps/eval.py's default, the README numbers) and Table 3 (middle MCP, with and without scale).
SETTINGS = {p.key: p for p in (protocol.DIR, protocol.DIR_MIDDLE_MCP, protocol.DIR_MIDDLE_MCP_UNSCALED)}
# Procrustes-aligned errors on the MANO joints and vertices (no root or scale choice).
PROCRUSTES_KEY = 'procrustes-mano-interacting'
PROCRUSTES_NAME = 'Procrustes-aligned, MANO joints, interacting'
# Protocols on InterHand2.6M's triangulated joints computed when the data carries them (interhand26m
# >= 1.1.0): the InterHand2.6M/InterWild setting on the subsets the converted data holds (the
# builder's 'all' config also holds single-hand samples).
TRIANGULATED = (protocol.INTERHAND26M_INTERACTING,)
TRIANGULATED_WITH_SINGLE = (protocol.INTERHAND26M, protocol.INTERHAND26M_INTERACTING, protocol.INTERHAND26M_SINGLE)


# ---------------------------------------------------------------------------------------------------
# Joint regressor, alignment, projection (work on numpy and jax arrays alike).


def eval_joint_regressor(asset: ManoAsset) -> np.ndarray:
  """The evaluation regressor `Jr` (docs/quirks.md#q24): (21, 778) float64, rows in DIR's 21-joint order.

  The 16 MANO `J_regressor` rows plus one-hot rows for the tip vertices (745, 317, 444, 556, 673)
  for both hands (docs/quirks.md#q20), reordered with `constants.REORDER_TO_21`.
  """
  tips = np.zeros((len(constants.TIP_VERTS_GT), constants.NUM_VERTS))
  tips[np.arange(len(constants.TIP_VERTS_GT)), constants.TIP_VERTS_GT] = 1.0
  rows = np.concatenate([np.asarray(asset.J_regressor, np.float64), tips], axis=0)
  return rows[list(constants.REORDER_TO_21)]


def regress_joints(jr, verts):
  """(21, 778) regressor, (..., 778, 3) vertices -> (..., 21, 3) joints, same units."""
  return jr @ verts


def _norm(x):
  """Euclidean norm over the last axis (numpy or jax arrays)."""
  return (x * x).sum(-1) ** 0.5


def bone_length_scale(gt_joints, pd_joints):
  """||J9 - J0||_gt / ||J9 - J0||_pred: (..., 21, 3) twice -> (...,)."""
  a, b = BONE_JOINTS
  return _norm(gt_joints[..., b, :] - gt_joints[..., a, :]) / _norm(pd_joints[..., b, :] - pd_joints[..., a, :])


def root_align(joints, verts, root_joint: int, scale=1.0):
  """Subtracts joint `root_joint` from joints and vertices, then multiplies them by `scale`.

  Args:
    joints: (..., 21, 3). verts: (..., V, 3). scale: scalar or (...,).

  Returns:
    (joints_rel, verts_rel) with the shapes of the inputs.
  """
  root = joints[..., root_joint : root_joint + 1, :]
  factor = scale if isinstance(scale, (int, float)) else scale[..., None, None]
  return (joints - root) * factor, (verts - root) * factor


def project(points_m, intrinsics):
  """Pinhole projection: (..., N, 3) camera-frame metres, (..., 3, 3) K -> (..., N, 2) pixels."""
  homogeneous = points_m @ intrinsics.swapaxes(-1, -2)
  return homogeneous[..., :2] / homogeneous[..., 2:]


def hand_errors(jr, gt_verts_cam_m, pd_verts_m, intrinsics, setting: protocol.Protocol):
  """Per-point errors of one hand under one alignment setting.

  The pixel errors are the reprojection-alignment error of docs/quirks.md#q24, reported as MIAA: the aligned
  (and scaled) prediction is moved to the GT root, projected with the crop intrinsics and compared
  with the projected GT in pixels of the 256x256 crop (apps/eval.py prints them with the label "mm").

  Args:
    jr: (21, 778) evaluation regressor.
    gt_verts_cam_m: (B, 778, 3) GT vertices, metres, camera frame.
    pd_verts_m: (B, 778, 3) predicted vertices, metres, any translation.
    intrinsics: (B, 3, 3) crop intrinsics.
    setting: a protocol on MANO joints (its root joint and scaling are used).

  Returns:
    dict of joint_mm (B, 21), vert_mm (B, 778), joint_px (B, 21), vert_px (B, 778).
  """
  gt_joints = regress_joints(jr, gt_verts_cam_m)
  pd_joints = regress_joints(jr, pd_verts_m)
  scale = bone_length_scale(gt_joints, pd_joints) if setting.scaled else 1.0
  root = setting.root_index
  gt_j, gt_v = root_align(gt_joints, gt_verts_cam_m, root)
  pd_j, pd_v = root_align(pd_joints, pd_verts_m, root, scale)
  gt_root = gt_joints[..., root : root + 1, :]
  return {
      'joint_mm': 1000.0 * _norm(pd_j - gt_j),
      'vert_mm': 1000.0 * _norm(pd_v - gt_v),
      'joint_px': _norm(project(pd_j + gt_root, intrinsics) - project(gt_joints, intrinsics)),
      'vert_px': _norm(project(pd_v + gt_root, intrinsics) - project(gt_verts_cam_m, intrinsics)),
  }


def mrrpe(gt_joints_left, gt_joints_right, pd_joints_left, pd_joints_right, pd_offset_015m, root_joint: int = 0):
  """Mean relative-root position error per sample (docs/architecture.md#metrics): (B,) metres.

  Compares the GT right-minus-left root vector with the predicted one. For the wrist (root_joint 0)
  the prediction is `0.15 * pd_offset` alone, as apps/eval.py does (the network centres both hands
  at the wrist). Otherwise the predicted right joints are shifted by `0.15 * pd_offset` and the
  vector between the two hands' `root_joint` is compared.

  Args:
    gt_joints_left, gt_joints_right: (B, 21, 3) GT joints, camera frame (not aligned).
    pd_joints_left, pd_joints_right: (B, 21, 3) predicted joints as the network centres them.
    pd_offset_015m: (B, 3) predicted right root minus left root, units of 0.15 m.
    root_joint: joint of the 21-joint order.
  """
  gt_rel = gt_joints_right[..., root_joint, :] - gt_joints_left[..., root_joint, :]
  pd_rel = OFFSET_UNIT_M * pd_offset_015m
  if root_joint != 0:
    pd_rel = pd_joints_right[..., root_joint, :] + pd_rel - pd_joints_left[..., root_joint, :]
  return _norm(gt_rel - pd_rel)


# ---------------------------------------------------------------------------------------------------
# PCK and AUC.


def pck_curve(errors_mm, thresholds_mm=PCK_THRESHOLDS_MM) -> np.ndarray:
  """Fraction of errors <= each threshold: any-shape errors (mm), (T,) thresholds -> (T,).

  NaN (invalid) errors are left out (`protocol.pck_curve_masked`, pooled over every entry).
  """
  return protocol.pck_curve_masked(errors_mm, thresholds_mm)


def pck_auc(errors_mm, thresholds_mm=PCK_THRESHOLDS_MM) -> float:
  """Area under the PCK curve over [t_first, t_last], normalised to [0, 1], by the field's rule.

  The trapezoid rule on the curve sampled at the thresholds, divided by the trapezoid rule on ones
  (FreiHAND's `EvalUtil`; `protocol.pck_auc_trapezoid`, pooled, NaN errors left out). It differs
  from the exact area under the step curve, mean(clip((t_last - e) / (t_last - t_first), 0, 1)), by
  at most half a threshold step over the range per error (0.005 for 101 thresholds over 0-50 mm);
  e.g. every error 10 mm gives 0.805, not 0.8.
  """
  return protocol.pck_auc_trapezoid(errors_mm, thresholds_mm)


# ---------------------------------------------------------------------------------------------------
# Per-sample errors of a batch and their summary.


@dataclasses.dataclass(frozen=True)
class EvalMano:
  """What evaluation needs of MANO, per side: the regressor `Jr` and the capped (closed) faces.

  `closed_faces` and `hole_loops` are None when the faces' open boundary does not form loops (a
  non-manifold mesh, e.g. the old synthetic hand of the reference fixture); the interpenetration
  volume then cannot be computed.
  """

  joint_regressor: Mapping[str, np.ndarray]  # side -> (21, 778) float64
  closed_faces: Mapping[str, np.ndarray] | None  # side -> (1538 + wrist loop length, 3) int64
  hole_loops: Mapping[str, tuple[np.ndarray, ...]] | None  # side -> loops capped in `closed_faces`

  @classmethod
  def from_pair(cls, mano: ManoPair) -> 'EvalMano':
    regressors = {side: eval_joint_regressor(mano[side]) for side in HANDS}
    try:
      loops = {side: mesh_volume.boundary_loops(mano[side].faces) for side in HANDS}
    except ValueError as e:
      log.warning('MANO faces cannot be closed (%s); no interpenetration volume', e)
      return cls(joint_regressor=regressors, closed_faces=None, hole_loops=None)
    return cls(
        joint_regressor=regressors,
        closed_faces={
            side: mesh_volume.cap_faces(mano[side].faces, constants.NUM_VERTS, loops[side]) for side in HANDS
        },
        hole_loops=loops,
    )


# The largest intersection box of two hands' boxes the device volume covers (`make_interpenetration_fn`):
# MANO hands are < 0.25 m across; 64 centres at the default 5 mm voxel.
MAX_OVERLAP_M = 0.32


def make_interpenetration_fn(mano: EvalMano, voxel_m: float = mesh_volume.VOXEL_M):
  """`sample_errors`' interpenetration volume of one example in jnp, for the jitted evaluation step.

  Returns:
    A function of the predicted `mesh_xyz_left`, `mesh_xyz_right` (778, 3) m and `offset` (3,) in 0.15 m
    units -> () cm^3: the right mesh placed at the left one plus 0.15 * offset, both capped, the volume
    inside both (`mesh_volume.make_interpenetration_volume` on a window of MAX_OVERLAP_M / `voxel_m`
    centres per axis; the same voxel count as the numpy volume, NaN past the window). vmap it.

  Raises:
    ValueError: the MANO faces cannot be closed (`EvalMano.closed_faces` is None).
  """
  _require_closed_faces(mano)
  volume_cm3 = mesh_volume.make_interpenetration_volume(
      mano.closed_faces['left'], mano.closed_faces['right'], voxel_m, math.ceil(MAX_OVERLAP_M / voxel_m - 1e-9)
  )

  def interpenetration_cm3(left_m, right_m, offset_015m):
    return volume_cm3(*_closed_placed_hands(mano, left_m, right_m, offset_015m))

  return interpenetration_cm3


def _require_closed_faces(mano: EvalMano) -> None:
  if mano.closed_faces is None:
    raise ValueError('interpenetration volume needs closable MANO faces; pass voxel_m=None')


def _closed_placed_hands(mano: EvalMano, left_m, right_m, offset_015m):
  """The predicted hands as the interpenetration volume takes them: (..., 778, 3) m each and (..., 3)
  offset in 0.15 m units (numpy, or jnp inside the evaluation step) -> both capped (`cap_vertices`), the
  right one placed at the left one plus 0.15 * offset (the prediction as it is, no alignment)."""
  left = mesh_volume.cap_vertices(left_m, mano.hole_loops['left'])
  right = mesh_volume.cap_vertices(right_m + OFFSET_UNIT_M * offset_015m[..., None, :], mano.hole_loops['right'])
  return left, right


def _triangulated_gt(gt: Mapping, side: str):
  """One hand's triangulated joints (B, 21, 3) m and validity (B, 21) bool in DIR's joint order."""
  xp = protocol.array_module(gt['joint_3d_cam_m'])
  joints = schema.interhand_joints_in_dir_order(protocol.as_float(gt['joint_3d_cam_m']), side)
  valid = schema.interhand_joints_in_dir_order(xp.asarray(gt['joint_3d_valid']).astype(bool)[..., None], side)
  return joints, valid[..., 0]


def row_errors(
    mano: EvalMano,
    gt: Mapping,
    pred: Mapping,
    settings: Mapping[str, protocol.Protocol] = SETTINGS,
    triangulated: Sequence[protocol.Protocol] = (),
) -> dict:
  """Per-sample errors of every row of one batch and one stage, before the interacting rows are chosen.

  numpy arrays are computed in float64 on the host; jax arrays in float32 inside the jitted
  evaluation step (`make_row_errors_fn`), so that only these small per-sample results leave the
  device. `sample_errors` (the host) and `MetricAccumulator.update_rows` (the device's rows) keep
  the 'mano' entries of the interacting rows only (`interacting_rows`).

  Args: as `sample_errors` (`gt`'s hand_type, human_annot and triangulated joints optional); the
    triangulated protocols are computed only when `gt` carries the triangulated joints.

  Returns:
    'is_interacting': (B,) bool, every row True when `gt` has no 'hand_type';
    'mano': `sample_errors`' entries on MANO joints and meshes (`settings`, PROCRUSTES_KEY, and
      'iv_cm3' when `pred` has it) for all B rows;
    'triangulated': its entries of the triangulated protocols (B rows, already masked by subset).
  """
  pd_verts = {h: protocol.as_float(pred[f'mesh_xyz_{h}']) for h in HANDS}
  xp = protocol.array_module(pd_verts['left'])
  dtype = pd_verts['left'].dtype
  intrinsics = protocol.as_float(xp.asarray(gt['intrinsics']))
  gt_verts = {h: protocol.as_float(xp.asarray(gt[f'verts_cam_{h}'])) for h in HANDS}
  regressor = {h: xp.asarray(mano.joint_regressor[h], dtype) for h in HANDS}
  pd_joints = {h: regress_joints(regressor[h], pd_verts[h]) for h in HANDS}
  gt_joints = {h: regress_joints(regressor[h], gt_verts[h]) for h in HANDS}
  offset = protocol.as_float(pred['offset'])
  is_interacting = (
      xp.ones(intrinsics.shape[0], bool)
      if 'hand_type' not in gt
      else xp.asarray(gt['hand_type']) == schema.HAND_TYPES.index('interacting')
  )
  on_mano, on_triangulated = {}, {}
  with protocol.quiet_invalid(xp):  # single-hand rows have no second GT mesh: their NaNs are dropped
    for name, setting in settings.items():
      for h in HANDS:
        err = hand_errors(regressor[h], gt_verts[h], pd_verts[h], intrinsics, setting)
        on_mano[f'{name}/joint_mm/{h}'] = err['joint_mm']
        for key in ('vert_mm', 'joint_px', 'vert_px'):
          on_mano[f'{name}/{key}/{h}'] = err[key].mean(-1)
      on_mano[f'{name}/mrrpe_mm'] = 1000.0 * mrrpe(
          gt_joints['left'], gt_joints['right'], pd_joints['left'], pd_joints['right'], offset, setting.root_index
      )
    for h in HANDS:
      on_mano[f'{PROCRUSTES_KEY}/joint_mm/{h}'] = protocol.procrustes_errors_mm(pd_joints[h], gt_joints[h])
      on_mano[f'{PROCRUSTES_KEY}/vert_mm/{h}'] = protocol.procrustes_errors_mm(pd_verts[h], gt_verts[h]).mean(-1)
    if 'iv_cm3' in pred:
      on_mano['iv_cm3'] = protocol.as_float(pred['iv_cm3'])
    if triangulated and all(key in gt for key in TRIANGULATED_GT_KEYS):
      tri = {h: _triangulated_gt(gt, h) for h in HANDS}
      for p in triangulated:
        in_subset = protocol.subset_mask(p.subset, is_interacting, gt.get('human_annot'))
        for h in HANDS:
          joints, valid = tri[h]
          on_triangulated[f'{p.key}/joint_mm/{h}'] = protocol.protocol_errors_mm(
              p, pd_joints[h], joints, valid & in_subset[:, None]
          )
        both_roots = tri['left'][1][:, p.root_index] & tri['right'][1][:, p.root_index]
        relative_mm = 1000.0 * mrrpe(
            tri['left'][0], tri['right'][0], pd_joints['left'], pd_joints['right'], offset, p.root_index
        )
        on_triangulated[f'{p.key}/mrrpe_mm'] = xp.where(is_interacting & in_subset & both_roots, relative_mm, xp.nan)
        on_triangulated[f'{p.key}/is_interacting'] = is_interacting
  return {'is_interacting': is_interacting, 'mano': on_mano, 'triangulated': on_triangulated}


def interacting_rows(rows: Mapping) -> dict:
  """`sample_errors`' flat dict from `row_errors` (numpy): the 'mano' entries of the interacting rows,
  the 'triangulated' entries of every row."""
  keep = np.asarray(rows['is_interacting'], bool)
  out = {key: np.asarray(value)[keep] for key, value in rows['mano'].items()}
  out.update({key: np.asarray(value) for key, value in rows['triangulated'].items()})
  return out


def make_row_errors_fn(
    mano: EvalMano,
    settings: Mapping[str, protocol.Protocol] = SETTINGS,
    triangulated: Sequence[protocol.Protocol] = (),
    voxel_m: float | None = mesh_volume.VOXEL_M,
):
  """`row_errors` for the jitted evaluation step: `(gt, stage) -> rows` on jax arrays, with the
  interpenetration volume (`make_interpenetration_fn`, vmapped) when `voxel_m` is set.

  Raises:
    ValueError: `voxel_m` is set and the MANO faces cannot be closed.
  """
  volume = None if voxel_m is None else jax.vmap(make_interpenetration_fn(mano, voxel_m))

  def errors(gt: Mapping, stage: Mapping) -> dict:
    if volume is not None:
      stage = {**stage, 'iv_cm3': volume(stage['mesh_xyz_left'], stage['mesh_xyz_right'], stage['offset'])}
    return row_errors(mano, gt, stage, settings, triangulated)

  return errors


def sample_errors(
    mano: EvalMano,
    gt: Mapping,
    pred: Mapping,
    settings: Mapping[str, protocol.Protocol] = SETTINGS,
    voxel_m: float | None = mesh_volume.VOXEL_M,
    triangulated: Sequence[protocol.Protocol] = (),
):
  """Per-sample errors of one batch and one stage, float64 numpy.

  Everything on MANO joints and meshes (`settings`, PROCRUSTES_KEY, the interpenetration volume) is
  computed on the interacting samples only: all B when `gt` has no 'hand_type', else the I samples
  whose hand type is 'interacting' (a single-hand sample's other hand has no ground-truth mesh).

  Args:
    mano: regressors and closed faces (`EvalMano.from_pair`).
    gt: 'verts_cam_{left,right}' (B, 778, 3) m camera frame, 'intrinsics' (B, 3, 3); for
      `triangulated`: 'joint_3d_cam_m' (B, 42, 3) m, 'joint_3d_valid' (B, 42) bool (InterHand2.6M's
      order, `dir_jax.data.schema`), 'hand_type' (B,) index into `schema.HAND_TYPES`, and for the
      human_annot subset 'human_annot' (B,) bool.
    pred: 'mesh_xyz_{left,right}' (B, 778, 3) m, 'offset' (B, 3) in 0.15 m units; optionally 'iv_cm3'
      (B,), the volume computed on the device (`make_interpenetration_fn`), used instead of the host's.
    settings: protocols on MANO joints, by key.
    voxel_m: interpenetration voxel edge; None skips the (slow, per-sample) volume.
    triangulated: protocols on triangulated joints.

  Returns:
    Flat dict: '{key}/joint_mm/{hand}' (I or B, 21), NaN where a joint is not scored (invalid, or
    the sample outside the protocol's subset); for MANO protocols '{key}/{vert_mm,joint_px,vert_px}/{hand}'
    (I,) per-sample means and '{key}/mrrpe_mm' (I,); PROCRUSTES_KEY's joint_mm and vert_mm; for
    triangulated protocols '{key}/mrrpe_mm' (B,), NaN unless the sample is interacting, in the
    subset and both roots are valid (InterHand2.6M's rule), and '{key}/is_interacting' (B,) bool;
    'iv_cm3' (I,) when voxel_m is set: the
    volume shared by the two predicted meshes, the right one placed at the left one plus 0.15 *
    offset (the prediction as it is, no alignment or scaling).
  """
  pred = {key: np.asarray(value) for key, value in pred.items() if voxel_m is not None or key != 'iv_cm3'}
  rows = row_errors(mano, gt, pred, settings, triangulated)
  out = interacting_rows(rows)
  if voxel_m is not None and 'iv_cm3' not in out:
    _require_closed_faces(mano)
    keep = rows['is_interacting']
    left, right = _closed_placed_hands(
        mano,
        np.asarray(pred['mesh_xyz_left'], np.float64)[keep],
        np.asarray(pred['mesh_xyz_right'], np.float64)[keep],
        np.asarray(pred['offset'], np.float64)[keep],
    )
    out['iv_cm3'] = np.asarray(
        [
            mesh_volume.interpenetration_volume(
                left[i], mano.closed_faces['left'], right[i], mano.closed_faces['right'], voxel_m
            )
            for i in range(len(left))
        ]
    )
  return out


def summarize(errors: Mapping[str, np.ndarray], thresholds_mm=PCK_THRESHOLDS_MM) -> dict:
  """Dataset metrics from per-sample errors (`sample_errors`, concatenated over batches).

  Joint errors are averaged as InterHand2.6M's evaluation averages them: each joint over the samples
  where it is scored, then over the joints (21 per hand, 42 for 'all'); with every joint scored this
  is the plain mean (DIR's apps/eval.py). A protocol with no scored joint reports only its
  'num_samples' (0).

  Returns:
    Plain Python values: '{key}/{mpjpe,auc}/{left,right,all}' floats, '{key}/pck/{hand}' and
    '{key}/joint_errors_mm/{left,right}' (21 per-joint means) lists, '{key}/num_samples' int; for
    MANO protocols also '{key}/{mpvpe,miaa_joint,miaa_vert}/{hand}' and '{key}/mrrpe/all';
    PROCRUSTES_KEY's mpjpe and mpvpe; 'iv/all' float; triangulated protocols' '{key}/mrrpe/all'
    where an interacting sample with both roots valid is scored, and '{key}/mpjpe_sh_ih_mean/all'
    where both single-hand and interacting samples are scored: the mean of the 42 per-joint means
    over the single-hand samples and the 42 over the interacting ones (InterWild's evaluation prints
    this as "MPJPE for all hand sequences"; InterHand2.6M's pools the samples: 'mpjpe/all').
  """
  out = {}
  keys = sorted({key.split('/')[0] for key in errors if key.endswith('/joint_mm/left')})
  for s in keys:
    joint = {h: errors[f'{s}/joint_mm/{h}'] for h in HANDS}
    scored = np.isfinite(np.concatenate([joint[h] for h in HANDS], axis=-1))
    out[f'{s}/num_samples'] = int(scored.any(axis=-1).sum())
    if not scored.any():
      continue
    for h in HANDS:
      out[f'{s}/mpjpe/{h}'] = protocol.masked_mpjpe_mm(joint[h], per_joint=True)
      out[f'{s}/joint_errors_mm/{h}'] = [
          None if np.isnan(m) else float(m) for m in protocol.per_joint_means_mm(joint[h])
      ]
    both_hands = np.concatenate([joint[h] for h in HANDS], -1)
    out[f'{s}/mpjpe/all'] = protocol.masked_mpjpe_mm(both_hands, per_joint=True)
    if f'{s}/is_interacting' in errors:  # InterWild's "all hand sequences": single and interacting apart
      is_interacting = errors[f'{s}/is_interacting'].astype(bool)
      groups = [protocol.per_joint_means_mm(both_hands[rows]) for rows in (~is_interacting, is_interacting)]
      if all(np.isfinite(g).any() for g in groups):
        out[f'{s}/mpjpe_sh_ih_mean/all'] = float(np.nanmean(np.concatenate(groups)))
    for metric, key in (('mpvpe', 'vert_mm'), ('miaa_joint', 'joint_px'), ('miaa_vert', 'vert_px')):
      if f'{s}/{key}/left' in errors:
        per_hand = [float(np.mean(errors[f'{s}/{key}/{h}'])) for h in HANDS]
        out.update({f'{s}/{metric}/{h}': v for h, v in zip(HANDS, per_hand)})
        out[f'{s}/{metric}/all'] = (per_hand[0] + per_hand[1]) / 2
    curves = [pck_curve(joint[h], thresholds_mm) for h in HANDS]
    aucs = [pck_auc(joint[h], thresholds_mm) for h in HANDS]
    for h, curve, auc in zip(HANDS, curves, aucs):
      out[f'{s}/pck/{h}'] = curve.tolist()
      out[f'{s}/auc/{h}'] = auc
    out[f'{s}/pck/all'] = ((curves[0] + curves[1]) / 2).tolist()
    out[f'{s}/auc/all'] = (aucs[0] + aucs[1]) / 2
    relative = errors.get(f'{s}/mrrpe_mm', np.zeros(0))
    if np.isfinite(relative).any():  # triangulated: over the samples where it is scored
      out[f'{s}/mrrpe/all'] = float(np.nanmean(relative))
  if len(errors.get('iv_cm3', ())):
    out['iv/all'] = float(np.mean(errors['iv_cm3']))
  return out


def protocol_names(keys: Sequence[str]) -> dict[str, str]:
  """{key: name in words} of protocol keys (`Protocol.key`, or PROCRUSTES_KEY)."""
  return {key: PROCRUSTES_NAME if key == PROCRUSTES_KEY else protocol.Protocol.parse(key).name for key in keys}


def choose_protocols(
    keys: Sequence[str] | None, has_triangulated: bool, dataset: str, has_single_hand: bool = False
) -> tuple[dict[str, protocol.Protocol], tuple[protocol.Protocol, ...]]:
  """The protocols to compute from their keys (`Protocol.key`; None: the defaults).

  Defaults: `SETTINGS` and, when the dataset stores triangulated joints, `TRIANGULATED`
  (`TRIANGULATED_WITH_SINGLE` when it holds single-hand samples: `has_single_hand`, the builder's
  'all' config). Refused with a ValueError that says why: the single-hand and all-frames subsets
  on data without single-hand samples (the 'interacting' config: they would score nothing or only
  the interacting ones), MANO-joint protocols off the interacting subset, triangulated joints the
  dataset (`dataset`, for the message) does not store.

  Returns:
    (MANO-joint protocols by key, triangulated protocols).
  """
  if not keys:
    return dict(SETTINGS), (
        () if not has_triangulated else TRIANGULATED_WITH_SINGLE if has_single_hand else TRIANGULATED
    )
  chosen = [protocol.Protocol.parse(key) for key in keys]
  for p in chosen:
    if p.subset in ('single', 'all') and not has_single_hand:
      raise ValueError(
          f'protocol {p.key} ({p.name}): {dataset} holds interacting annotations only (the '
          "interhand26m builder's 'interacting' config), so the single-hand and all-frames subsets "
          "have no examples to score; convert the 'all' config (tfds build data_prep/interhand26m "
          '--config all) and evaluate on it, or use the interacting or human_annot subset'
      )
    if p.gt_joints == 'mano' and p.subset != 'interacting':
      raise ValueError(f'protocol {p.key} ({p.name}): protocols on MANO joints are computed on the interacting subset')
    if p.gt_joints == 'triangulated' and not has_triangulated:
      raise ValueError(
          f'protocol {p.key} needs triangulated joints, which {dataset} does not store: convert the '
          'dataset again with interhand26m 1.1.0 or later (tfds build data_prep/interhand26m)'
      )
  return (
      {p.key: p for p in chosen if p.gt_joints == 'mano'},
      tuple(dict.fromkeys(p for p in chosen if p.gt_joints == 'triangulated')),
  )


def _select(batch: Mapping, keys: Sequence[str], valid) -> dict:
  return {k: np.asarray(batch[k])[valid] for k in keys if k in batch}


class MetricAccumulator:
  """Gathers per-sample errors of every stage batch by batch; `result()` gives the metric dict.

  On the host: `acc = MetricAccumulator(EvalMano.from_pair(mano))`, then for each batch
  `acc.update(gt, out['stages'], valid)`, finally `acc.result()`. The `triangulated` protocols are
  computed only when `gt` carries the triangulated joints (`sample_errors`). With errors computed on
  the device (`make_row_errors_fn`): `acc = MetricAccumulator()` and `acc.update_rows(rows, valid)`
  (the constructor's MANO and protocols are then unused).
  """

  def __init__(
      self,
      mano: EvalMano | None = None,
      settings: Mapping[str, protocol.Protocol] = SETTINGS,
      voxel_m: float | None = mesh_volume.VOXEL_M,
      thresholds_mm=PCK_THRESHOLDS_MM,
      triangulated: Sequence[protocol.Protocol] = TRIANGULATED,
  ):
    self.mano = mano
    self.settings = dict(settings)
    self.voxel_m = voxel_m
    self.thresholds_mm = tuple(float(t) for t in thresholds_mm)
    self.triangulated = tuple(triangulated)
    self._errors: list[dict[str, list[np.ndarray]]] = []
    self._num_samples = 0

  def update(self, gt: Mapping, stages: Sequence[Mapping], valid=None) -> None:
    """Adds one batch.

    Args:
      gt: GT batch (see `sample_errors`).
      stages: per-stage predictions, stage 0 first (DIR's `out['stages']`).
      valid: (B,) bool, False for padding rows; None = all valid.
    """
    if self.mano is None:
      raise ValueError('MetricAccumulator.update computes the errors: construct it with EvalMano.from_pair(mano)')
    valid = self._valid_rows(len(np.asarray(gt['intrinsics'])), valid)
    if not valid.any():
      return
    gt = _select(gt, GT_KEYS + TRIANGULATED_GT_KEYS + ('human_annot',), valid)
    triangulated = self.triangulated if all(k in gt for k in TRIANGULATED_GT_KEYS) else ()
    self._add(
        [
            sample_errors(
                self.mano, gt, _select(pred, PRED_KEYS + ('iv_cm3',), valid), self.settings, self.voxel_m, triangulated
            )
            for pred in stages
        ],
        int(valid.sum()),
    )

  def update_rows(self, stages_rows: Sequence[Mapping], valid=None) -> None:
    """Adds one batch of per-sample errors the evaluation step computed (`make_row_errors_fn`, one
    `row_errors` dict per stage, numpy); its protocols and volume are those the step was built with.

    Args:
      stages_rows: per stage, stage 0 first.
      valid: (B,) bool, False for padding rows; None = all valid.
    """
    valid = self._valid_rows(len(np.asarray(stages_rows[0]['is_interacting'])), valid)
    if valid.any():
      self._add(
          [interacting_rows(jax.tree.map(lambda x: np.asarray(x)[valid], rows)) for rows in stages_rows],
          int(valid.sum()),
      )

  @staticmethod
  def _valid_rows(batch: int, valid) -> np.ndarray:
    return np.ones(batch, bool) if valid is None else np.asarray(valid, bool).reshape(batch)

  def _add(self, stage_errors: Sequence[Mapping[str, np.ndarray]], num_samples: int) -> None:
    if not self._errors:
      self._errors = [dict() for _ in stage_errors]
    if len(stage_errors) != len(self._errors):
      raise ValueError(f'got {len(stage_errors)} stages, earlier batches had {len(self._errors)}')
    for store, errors in zip(self._errors, stage_errors):
      for key, value in errors.items():
        store.setdefault(key, []).append(value)
    self._num_samples += num_samples

  def result(self) -> dict:
    """Metric dict with keys 'stage{i}/...' (see the module docstring); plain Python values."""
    if not self._num_samples:
      raise ValueError('no valid samples were added')
    out = {'num_samples': self._num_samples, 'pck_thresholds_mm': list(self.thresholds_mm)}
    for i, store in enumerate(self._errors):
      errors = {key: np.concatenate(values, axis=0) for key, values in store.items()}
      out.update({f'stage{i}/{k}': v for k, v in summarize(errors, self.thresholds_mm).items()})
    out['protocols'] = protocol_names(sorted({k.split('/')[1] for k in out if k.endswith('/num_samples')}))
    return out


def stage_metrics(
    mano: EvalMano,
    gt: Mapping,
    stages: Sequence[Mapping],
    valid=None,
    settings: Mapping[str, protocol.Protocol] = SETTINGS,
    voxel_m: float | None = mesh_volume.VOXEL_M,
    thresholds_mm=PCK_THRESHOLDS_MM,
    triangulated: Sequence[protocol.Protocol] = TRIANGULATED,
) -> dict:
  """Metric dict of every stage for one set of predictions (one `MetricAccumulator` update)."""
  acc = MetricAccumulator(mano, settings, voxel_m, thresholds_mm, triangulated)
  acc.update(gt, stages, valid)
  return acc.result()


def scalar_metrics(results: Mapping) -> dict[str, float]:
  """The float entries of a result dict (drops PCK curves and thresholds), e.g. for logging."""
  return {k: float(v) for k, v in results.items() if isinstance(v, (int, float))}
