"""Evaluation protocols of two-hand reconstruction, named in words, and their pure array pieces.

A protocol is four choices, and every number reported under it carries its `Protocol.name`:
- root: the joint subtracted from the ground truth and (separately) from the prediction, 'wrist' or
  'middle_mcp' (joints 0 and 9 of DIR's 21-joint order, `dir_jax.mano.constants.JOINT_NAMES_21`);
- scaled: whether the root-relative prediction is multiplied by the ground-truth/predicted length of
  the wrist-to-middle-MCP bone (DIR's apps/eval.py) or left as predicted (InterHand2.6M's evaluation);
- gt_joints: 'mano' (joints regressed from the ground-truth MANO mesh, every joint valid) or
  'triangulated' (InterHand2.6M's multi-view joints with their per-joint `joint_valid`);
- subset: the test samples scored, 'interacting', 'single' (one hand), 'all', or 'human_annot'
  (InterHand2.6M's human-annotated subset).
Procrustes-aligned errors (PA-MPJPE, PA-MPVPE: `procrustes_errors_mm`) need no root or scale choice.

Arrays: the per-sample errors (`effective_validity`, `aligned_errors_mm`, `procrustes_align`,
`procrustes_errors_mm`) take numpy arrays, computed in float64 on the host, or jax arrays, computed
in their float32 inside the jitted evaluation step (`dir_jax.metrics.row_errors`); the summaries
(means, PCK, AUC) are numpy only.

Validity: an invalid joint is excluded, not counted as zero. As InterHand2.6M's evaluation does
(`joint_valid` of a hand multiplied by the validity of its root), a hand whose root joint is invalid
is invalid as a whole; under a scaled protocol a hand whose ground-truth bone (wrist or middle MCP)
is invalid cannot be scaled and is invalid as a whole too. Per-joint errors are NaN where invalid.

AUC (`pck_auc_trapezoid`): the trapezoid rule on the PCK curve sampled at the thresholds, divided by
the trapezoid rule on ones over the same thresholds, as FreiHAND's `EvalUtil.get_measures`
(lmb-freiburg/freihand, utils/eval_util.py) computes the AUCs the field publishes. PCK counts an
error equal to a threshold as correct (<=). `EvalUtil` averages per keypoint (curve and AUC of each
keypoint over its valid samples, then the mean over keypoints): `per_joint=True`; with every joint
valid that equals the pooled curve (`per_joint=False`) exactly. FreiHAND's eval.py samples 0-50 mm
at 100 thresholds (step 50/99 mm, `FREIHAND_PCK_THRESHOLDS_MM`); dir-jax keeps
`metrics.PCK_THRESHOLDS_MM`, 0-50 mm at 101 thresholds (step 0.5 mm, exact decimal thresholds). On
one error the two grids' trapezoid areas differ from the exact area under the step curve by at most
half a step over the range (0.005 and 0.00505) and from each other by at most their sum; on a
dataset's spread of errors these deviations average out (see `tests/test_protocol.py`).
"""

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dir_jax.mano import constants

WRIST = constants.JOINT_NAMES_21.index('wrist')  # 0
MIDDLE_MCP = constants.JOINT_NAMES_21.index('middle1')  # 9: the middle finger's base joint (MCP)
SCALE_BONE = (WRIST, MIDDLE_MCP)  # the bone whose GT/predicted length ratio scales the prediction

ROOTS = ('wrist', 'middle_mcp')
GT_JOINTS = ('mano', 'triangulated')
SUBSETS = ('interacting', 'single', 'all', 'human_annot')
SCALINGS = ('scaled', 'unscaled')  # the words of `Protocol.scaled` in names and keys

_ROOT_INDEX = {'wrist': WRIST, 'middle_mcp': MIDDLE_MCP}
_ROOT_WORDS = {'wrist': 'wrist', 'middle_mcp': 'middle MCP'}
_GT_WORDS = {'mano': 'MANO joints', 'triangulated': 'triangulated joints'}

# FreiHAND eval.py: `get_measures(0.0, 0.05, 100)` in metres, i.e. 100 thresholds over 0-50 mm.
FREIHAND_PCK_THRESHOLDS_MM = tuple(np.linspace(0.0, 50.0, 100).tolist())


def array_module(*arrays):
  """jax.numpy when any argument is a jax array (a tracer inside the jitted evaluation step), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def as_float(x):
  """Floats for the error arithmetic: float64 numpy on the host; a jax array keeps float32 (the
  network's precision; the device computes without 64-bit support)."""
  return jnp.asarray(x, jnp.float32) if isinstance(x, jax.Array) else np.asarray(x, np.float64)


def quiet_invalid(xp):
  """numpy's invalid-value and divide warnings off (NaN is the invalid marker); nothing to silence in jax."""
  return np.errstate(invalid='ignore', divide='ignore') if xp is np else contextlib.nullcontext()


def _check(field: str, value, valid: tuple) -> None:
  if value not in valid:
    raise ValueError(f'{field} must be one of {", ".join(map(repr, valid))}; got {value!r}')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One evaluation protocol: root joint x scaling x ground-truth joints x subset of samples."""

  root: str  # 'wrist' | 'middle_mcp'
  scaled: bool  # scale the prediction by the GT/predicted wrist-to-middle-MCP bone length
  gt_joints: str  # 'mano' (regressed from the GT mesh) | 'triangulated' (with joint validity)
  subset: str  # 'interacting' | 'single' | 'all' | 'human_annot'

  def __post_init__(self):
    _check('root', self.root, ROOTS)
    if not isinstance(self.scaled, (bool, np.bool_)):
      raise ValueError(f'scaled must be True or False; got {self.scaled!r}')
    _check('gt_joints', self.gt_joints, GT_JOINTS)
    _check('subset', self.subset, SUBSETS)

  @property
  def root_index(self) -> int:
    """The root joint in DIR's 21-joint order (0 wrist, 9 middle MCP)."""
    return _ROOT_INDEX[self.root]

  @property
  def scale_bone(self) -> tuple[int, int] | None:
    """The bone (two joint indices) whose length ratio scales the prediction; None when unscaled."""
    return SCALE_BONE if self.scaled else None

  @property
  def name(self) -> str:
    """In words, e.g. 'wrist, scaled, MANO joints, interacting'."""
    scaling = SCALINGS[0] if self.scaled else SCALINGS[1]
    return f'{_ROOT_WORDS[self.root]}, {scaling}, {_GT_WORDS[self.gt_joints]}, {self.subset}'

  @property
  def key(self) -> str:
    """Short machine key for JSON, e.g. 'wrist-scaled-mano-interacting'; `parse` reads it back."""
    scaling = SCALINGS[0] if self.scaled else SCALINGS[1]
    return f'{self.root}-{scaling}-{self.gt_joints}-{self.subset}'

  def __str__(self) -> str:
    return self.name

  @classmethod
  def parse(cls, text: str) -> 'Protocol':
    """The protocol of a key 'ROOT-SCALING-GTJOINTS-SUBSET' (see `key`); ValueError otherwise."""
    parts = str(text).strip().split('-')
    form = (
        f'ROOT-SCALING-GTJOINTS-SUBSET with ROOT in {"|".join(ROOTS)}, SCALING in '
        f'{"|".join(SCALINGS)}, GTJOINTS in {"|".join(GT_JOINTS)}, SUBSET in {"|".join(SUBSETS)}'
    )
    if len(parts) != 4:
      raise ValueError(f'protocol key {text!r} is not of the form {form}')
    root, scaling, gt_joints, subset = parts
    for field, value, valid in (
        ('root', root, ROOTS),
        ('scaling', scaling, SCALINGS),
        ('gt_joints', gt_joints, GT_JOINTS),
        ('subset', subset, SUBSETS),
    ):
      if value not in valid:
        raise ValueError(
            f'protocol key {text!r}: {field} must be one of {", ".join(map(repr, valid))}, '
            f'got {value!r} (form {form})'
        )
    return cls(root, scaling == 'scaled', gt_joints, subset)


# DIR (apps/eval.py, the README numbers, paper Table 2; `metrics.SETTINGS[DIR.key]`): wrist root,
# scaled by the wrist-to-middle-MCP bone, joints regressed from the GT MANO mesh, the interacting test
# images (the reference's `cut_inter_img` list, docs/architecture.md#data-preparation). Table 3
# aligns at the middle MCP, with and without scaling.
DIR = Protocol('wrist', True, 'mano', 'interacting')
DIR_MIDDLE_MCP = Protocol('middle_mcp', True, 'mano', 'interacting')
DIR_MIDDLE_MCP_UNSCALED = Protocol('middle_mcp', False, 'mano', 'interacting')
# InterHand2.6M's own evaluation (facebookresearch/InterHand2.6M, data/InterHand2.6M/dataset.py
# `evaluate`): wrist root, no scaling, triangulated joints with `joint_valid` (times the root's), each
# joint's mean over its valid samples then the mean over the 42 joints (`masked_mpjpe_mm(per_joint=
# True)` on both hands' (N, 42) errors), for all, single and interacting samples. The human-annotated
# subset is InterWild's setting.
INTERHAND26M = Protocol('wrist', False, 'triangulated', 'all')
INTERHAND26M_HUMAN_ANNOT = Protocol('wrist', False, 'triangulated', 'human_annot')
INTERHAND26M_SINGLE = Protocol('wrist', False, 'triangulated', 'single')
INTERHAND26M_INTERACTING = Protocol('wrist', False, 'triangulated', 'interacting')

DEFAULT_PROTOCOLS = (
    DIR,
    DIR_MIDDLE_MCP,
    DIR_MIDDLE_MCP_UNSCALED,
    INTERHAND26M,
    INTERHAND26M_INTERACTING,
    INTERHAND26M_SINGLE,
    INTERHAND26M_HUMAN_ANNOT,
)


# ---------------------------------------------------------------------------------------------------
# Subsets, root alignment with validity, masked means.


def read_annotation_ids(path: str | None, what: str = 'human_annot list') -> set[int]:
  """The annotation ids of a file with one integer per line, blank lines ignored: InterHand2.6M's
  human-annotated subset as InterWild distributes it (aid_human_annot_test.txt).

  Raises:
    ValueError: no path, an unreadable file, a line that is not an integer, or no id; the message
      names `what` and the file (and line).
  """
  if not path:
    raise ValueError(
        f'a human_annot protocol needs {what}: the file of human-annotated annotation ids '
        '(aid_human_annot_test.txt, one id per line)'
    )
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f'{what} {path}: cannot be read ({e})') from e
  ids = set()
  for number, line in enumerate(lines, start=1):
    if line.strip():
      try:
        ids.add(int(line.strip()))
      except ValueError:
        raise ValueError(
            f'{what} {path}, line {number}: {line.strip()[:40]!r} is not an annotation id '
            '(expected one integer per line)'
        ) from None
  if not ids:
    raise ValueError(f'{what} {path}: no annotation id in the file')
  return ids


def subset_mask(subset: str, is_interacting, human_annot=None):
  """Which samples a subset scores: (N,) bool (numpy or jnp, as `is_interacting`).

  Args:
    subset: one of `SUBSETS`.
    is_interacting: (N,) bool, True where InterHand2.6M's `hand_type` is 'interacting' (False: one hand).
    human_annot: (N,) bool, True for human-annotated samples; needed only for 'human_annot'.
  """
  _check('subset', subset, SUBSETS)
  if subset == 'interacting':
    return is_interacting
  if subset == 'single':
    return ~is_interacting
  if subset == 'all':
    return array_module(is_interacting).ones_like(is_interacting, bool)
  if human_annot is None:
    raise ValueError("subset 'human_annot' needs the per-sample human_annot flags")
  return array_module(is_interacting).asarray(human_annot).astype(bool).reshape(is_interacting.shape)


def effective_validity(valid, root_index: int, scale_bone: tuple[int, int] | None = None):
  """Joint validity after the hand-level rules: (N, J) bool.

  A hand (row) is invalid as a whole when its root joint is invalid (InterHand2.6M multiplies each
  hand's `joint_valid` by its root's) and, under scaling, when either end of the scale bone is.

  Args:
    valid: (N, J) bool (or 0/1) per-joint validity of the ground truth.
    root_index: root joint. scale_bone: (a, b) joint indices, or None when unscaled.
  """
  valid = array_module(valid).asarray(valid).astype(bool)
  keep = valid[:, root_index]
  if scale_bone is not None:
    keep = keep & valid[:, scale_bone[0]] & valid[:, scale_bone[1]]
  return valid & keep[:, None]


def aligned_errors_mm(pred_joints_m, gt_joints_m, valid, root_index: int, scale_bone: tuple[int, int] | None):
  """Per-joint errors after root alignment (and optional bone-length scaling): (N, J) mm, NaN = invalid.

  The GT root is subtracted from the GT, the predicted root from the prediction; with `scale_bone`
  = (a, b) the root-relative prediction is then multiplied by ||gt_b - gt_a|| / ||pred_b - pred_a||.
  Joints invalid after `effective_validity` are NaN, whatever their coordinates (even NaN).

  Args:
    pred_joints_m: (N, J, 3) predicted joints, metres, any translation.
    gt_joints_m: (N, J, 3) ground-truth joints, metres.
    valid: (N, J) bool GT joint validity; None = every joint valid (MANO-regressed joints).
    root_index: root joint (`WRIST`, `MIDDLE_MCP`).
    scale_bone: (a, b), e.g. `SCALE_BONE`; None = unscaled.
  """
  xp = array_module(pred_joints_m, gt_joints_m, valid)
  pred, gt = as_float(xp.asarray(pred_joints_m)), as_float(xp.asarray(gt_joints_m))
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
    raise ValueError(f'expected two (N, J, 3) arrays of one shape; got {pred.shape} and {gt.shape}')
  valid = xp.ones(gt.shape[:2], bool) if valid is None else xp.asarray(valid).astype(bool)
  if valid.shape != gt.shape[:2]:
    raise ValueError(f'valid must be {gt.shape[:2]}; got {valid.shape}')
  valid = effective_validity(valid, root_index, scale_bone)
  with quiet_invalid(xp):
    pred_rel = pred - pred[:, root_index : root_index + 1]
    gt_rel = gt - gt[:, root_index : root_index + 1]
    if scale_bone is not None:
      a, b = scale_bone
      scale = xp.linalg.norm(gt[:, b] - gt[:, a], axis=-1) / xp.linalg.norm(pred[:, b] - pred[:, a], axis=-1)
      pred_rel = pred_rel * scale[:, None, None]
    errors = 1000.0 * xp.linalg.norm(pred_rel - gt_rel, axis=-1)
  return xp.where(valid, errors, xp.nan)


def protocol_errors_mm(protocol: Protocol, pred_joints_m, gt_joints_m, valid=None):
  """`aligned_errors_mm` with the protocol's root and scaling: (N, J) mm, NaN = invalid.

  `valid` is required for triangulated ground truth (None there would silently score invalid
  joints) and must be None or all True for MANO-regressed joints.
  """
  if protocol.gt_joints == 'triangulated' and valid is None:
    raise ValueError(f'protocol {protocol.name!r} needs the GT joint validity (valid)')
  return aligned_errors_mm(pred_joints_m, gt_joints_m, valid, protocol.root_index, protocol.scale_bone)


def masked_mpjpe_mm(errors_mm, per_joint: bool = False) -> float:
  """Mean of the valid (non-NaN) entries of (N, J) per-joint errors: mm; NaN when none is valid.

  per_joint=False: the mean over every valid (sample, joint) entry. per_joint=True: the mean over
  joints of each joint's mean over its valid samples (InterHand2.6M's and FreiHAND's averaging;
  InterHand2.6M averages both hands' 42 joints together: pass (N, 42)), joints without a valid
  sample left out. The two agree when every joint is valid.
  """
  errors = np.asarray(errors_mm, np.float64)
  errors = errors.reshape(-1, errors.shape[-1])
  ok = ~np.isnan(errors)
  if not ok.any():
    return float('nan')
  if not per_joint:
    return float(errors[ok].mean())
  return float(np.nanmean(per_joint_means_mm(errors)))


def per_joint_means_mm(errors_mm) -> np.ndarray:
  """Each joint's mean over its valid (non-NaN) samples: (N, J) -> (J,), NaN for a joint never valid."""
  errors = np.asarray(errors_mm, np.float64)
  errors = errors.reshape(-1, errors.shape[-1])
  ok = ~np.isnan(errors)
  counts = ok.sum(0)
  sums = np.where(ok, errors, 0.0).sum(0)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# ---------------------------------------------------------------------------------------------------
# Procrustes alignment.


def procrustes_align(pred, gt, weights=None):
  """The similarity transform of `pred` closest to `gt` in least squares (Umeyama 1991): (..., P, 3).

  Finds scale s > 0, rotation R (det +1, no reflection) and translation t minimising
  sum_i w_i ||gt_i - (s R pred_i + t)||^2 and returns s R pred + t. Per leading index.

  Args:
    pred, gt: (..., P, 3) points, same units.
    weights: (..., P) non-negative point weights (0 = point left out of the fit, e.g. an invalid
      joint); None = all 1. A fit with no weight, or a prediction collapsed to one point, gives NaN.
  """
  xp = array_module(pred, gt, weights)
  pred, gt = as_float(xp.asarray(pred)), as_float(xp.asarray(gt))
  w = xp.ones(pred.shape[:-1], pred.dtype) if weights is None else as_float(xp.asarray(weights))
  with quiet_invalid(xp):
    w = w / w.sum(-1, keepdims=True)
    # Left-out points may hold NaN coordinates; they must not reach the sums.
    pred_0 = xp.where(w[..., None] > 0, pred, 0.0)
    gt_0 = xp.where(w[..., None] > 0, gt, 0.0)
    mu_pred = (w[..., None] * pred_0).sum(-2, keepdims=True)
    mu_gt = (w[..., None] * gt_0).sum(-2, keepdims=True)
    x, y = pred_0 - mu_pred, gt_0 - mu_gt
    var_pred = (w * (x * x).sum(-1)).sum(-1)
    cov = xp.einsum('...p,...pi,...pj->...ij', w, y, x)  # (..., 3, 3) weighted covariance, gt x pred
    cov = xp.nan_to_num(cov)  # a NaN fit (no weight) still goes through the SVD; NaN comes back below
    u, d, vt = xp.linalg.svd(cov)
    sign = xp.sign(xp.linalg.det(u) * xp.linalg.det(vt))
    sign = xp.where(sign == 0, 1.0, sign)
    fix = xp.concatenate([xp.ones(d.shape[:-1] + (2,), d.dtype), sign[..., None]], axis=-1)
    rot = (u * fix[..., None, :]) @ vt
    scale = (d * fix).sum(-1) / var_pred
    aligned = scale[..., None, None] * (pred - mu_pred) @ rot.swapaxes(-1, -2) + mu_gt
  return aligned


def procrustes_errors_mm(pred_m, gt_m, valid=None):
  """Per-point errors after `procrustes_align` fitted on the valid points: (..., P) mm, NaN = invalid.

  PA-MPJPE on joints, PA-MPVPE on vertices (each fitted on its own points, as FreiHAND's eval.py
  does for MANO meshes).

  Args:
    pred_m, gt_m: (..., P, 3) metres. valid: (..., P) bool; None = all valid.
  """
  xp = array_module(pred_m, gt_m, valid)
  pred, gt = as_float(xp.asarray(pred_m)), as_float(xp.asarray(gt_m))
  valid = xp.ones(pred.shape[:-1], bool) if valid is None else xp.asarray(valid).astype(bool)
  aligned = procrustes_align(pred, gt, valid.astype(pred.dtype))
  with quiet_invalid(xp):
    errors = 1000.0 * xp.linalg.norm(aligned - gt, axis=-1)
  return xp.where(valid, errors, xp.nan)


def pa_mpjpe_mm(pred_joints_m, gt_joints_m, valid=None) -> float:
  """Procrustes-aligned MPJPE: (N, J, 3) twice, (N, J) validity -> mean over valid joints, mm."""
  return masked_mpjpe_mm(procrustes_errors_mm(pred_joints_m, gt_joints_m, valid))


def pa_mpvpe_mm(pred_verts_m, gt_verts_m) -> float:
  """Procrustes-aligned MPVPE: (N, V, 3) twice -> mean vertex error after per-mesh alignment, mm."""
  return masked_mpjpe_mm(procrustes_errors_mm(pred_verts_m, gt_verts_m))


# ---------------------------------------------------------------------------------------------------
# PCK and its trapezoid AUC.


def pck_curve_masked(errors_mm, thresholds_mm, per_joint: bool = False) -> np.ndarray:
  """Fraction of valid (non-NaN) errors <= each threshold: (T,); NaN entries are ignored.

  Args:
    errors_mm: any shape (pooled) or (..., J) with per_joint (the last axis is the joint).
    thresholds_mm: (T,) increasing.
    per_joint: the mean over joints of each joint's curve (FreiHAND's `EvalUtil`), joints without
      a valid error left out; else the curve of all valid errors pooled.
  """
  errors = np.asarray(errors_mm, np.float64)
  thresholds = np.asarray(thresholds_mm, np.float64)
  columns = errors.reshape(-1, errors.shape[-1]).T if per_joint else errors.reshape(1, -1)
  curves = []
  for column in columns:
    column = np.sort(column[~np.isnan(column)])
    if len(column):  # errors <= t: the insertion point after equal values
      curves.append(np.searchsorted(column, thresholds, side='right') / len(column))
  if not curves:
    raise ValueError('no valid (non-NaN) errors')
  return np.mean(curves, axis=0)


def pck_auc_trapezoid(errors_mm, thresholds_mm, per_joint: bool = False) -> float:
  """Area under the sampled PCK curve by the trapezoid rule, normalised to [0, 1].

  trapz(PCK(t_k), t_k) / trapz(1, t_k) over the thresholds t_k (FreiHAND's `EvalUtil` rule); NaN
  (invalid) errors are ignored. See `pck_curve_masked` for `per_joint` (the trapezoid rule is linear,
  so the AUC of the mean curve is the mean of the per-joint AUCs).
  """
  thresholds = np.asarray(thresholds_mm, np.float64)
  if thresholds.ndim != 1 or len(thresholds) < 2 or np.any(np.diff(thresholds) <= 0):
    raise ValueError(f'thresholds must be 1-D, increasing, at least two; got {thresholds_mm!r}')
  curve = pck_curve_masked(errors_mm, thresholds, per_joint)
  return float(np.trapezoid(curve, thresholds) / np.trapezoid(np.ones_like(thresholds), thresholds))
