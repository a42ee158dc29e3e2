"""DIR's training losses: one pure jnp function per term and `dir_losses` for the whole dict.

Map: docs/architecture.md#losses.

Layout is NHWC throughout (the Flax model's layout); the reference's NCHW tensors are transposed by
the caller. Every function is jit-able and differentiable; static arguments (sizes, class modes,
the config) are Python values.

The dict `dir_losses` returns has the reference's 42 keys in the reference's insertion order
(`loss_term_names`), each term already multiplied by its weight; `total_loss` sums them. Note that
`jax.jit` returns dicts with sorted keys, so use `loss_term_names` when the order matters.

Reproduced quirks (docs/quirks.md): the "SmoothL1Loss" is a Huber loss with delta 0.01 and the
Lovász loss is applied to raw logits (docs/quirks.md#q18); the 32x32 targets are taken by nearest
(pixel 8i) and non-antialiased bilinear (pixels 8i+3, 8i+4) resizing (docs/quirks.md#q19); the
reference's GT centring is available as `gt_center='reference'` (docs/quirks.md#q1, see
`dir_losses`).
"""

from typing import Any, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dir_jax.data import label_grid
from dir_jax.mano.constants import NUM_JOINTS, NUM_VERTS
from dir_jax.mano.constants import SIDES as HANDS

# Per-stage term names, in the reference's insertion order (dir.py:572-594); '%d' is the stage index.
_STAGE_TERMS = (
    'joint_left_uv_%d',
    'joint_right_uv_%d',
    'mesh_left_uv_%d',
    'mesh_right_uv_%d',
    'joint_left_xyz_%d',
    'joint_right_xyz_%d',
    'mesh_left_xyz_%d',
    'mesh_right_xyz_%d',
    'edge_left_%d',
    'edge_right_%d',
    'normal_left_%d',
    'normal_right_%d',
    'offset_%d',
)
# Numerical guards of the reference: `sqrt(. + 1e-12)` in EdgeLengthLoss, `F.normalize`'s eps.
_EDGE_EPS = 1e-12
_NORMALIZE_EPS = 1e-12


def loss_term_names(num_stages: int = 3) -> list[str]:
  """The keys of `dir_losses`, in the reference's dict order (3 + 13 per stage)."""
  return ['seg', 'dense', 'lovasz'] + [t % s for s in range(num_stages) for t in _STAGE_TERMS]


def total_loss(terms: Mapping[str, chex.Array]) -> chex.Array:
  """Plain sum of the (already weighted) loss terms, as train.py does; a scalar."""
  return sum(terms.values())


def _float(x: chex.Array) -> chex.Array:
  """`x` as a floating array of at least float32 (the reference computes its losses in float32)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def huber(pred: chex.Array, target: chex.Array, delta: float = 0.01) -> chex.Array:
  """Mean Huber loss, the reference's "SmoothL1Loss" (loss.py:63-91; docs/quirks.md#q18).

  Per element `z = pred - target`: `0.5 z^2` if `|z| < delta`, else `delta (|z| - delta / 2)`;
  averaged over all elements (the reference's per-example mean, then batch mean, is the same).

  Args:
    pred: any shape, any units.
    target: same shape and units as `pred`.
    delta: threshold between the quadratic and linear parts, in the inputs' units.

  Returns:
    A scalar, in squared input units.
  """
  chex.assert_equal_shape([pred, target])
  return jnp.mean(optax.losses.huber_loss(_float(pred), _float(target), delta=delta))


def _face_corners(verts: chex.Array, faces: chex.Array) -> tuple[chex.Array, chex.Array, chex.Array]:
  """(B, V, 3) vertices, (F, 3) faces -> the three (B, F, 3) corner positions."""
  return verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]


def _check_mesh_args(pred_verts: chex.Array, gt_verts: chex.Array, faces: chex.Array) -> None:
  chex.assert_rank(pred_verts, 3)
  chex.assert_equal_shape([pred_verts, gt_verts])
  chex.assert_axis_dimension(pred_verts, 2, 3)
  chex.assert_rank(faces, 2)
  chex.assert_axis_dimension(faces, 1, 3)
  chex.assert_type(faces, int)


def edge_length_loss(pred_verts: chex.Array, gt_verts: chex.Array, faces: chex.Array) -> chex.Array:
  """Mean absolute difference of the face edge lengths (loss.py EdgeLengthLoss).

  Per face `(i0, i1, i2)` the lengths of edges v0v1, v0v2, v1v2 are `sqrt(sum(d^2) + 1e-12)`.

  Args:
    pred_verts: (B, V, 3) predicted vertices, any length unit (DIR: metres / 0.15).
    gt_verts: (B, V, 3) target vertices, same unit; translation does not matter.
    faces: (F, 3) integer vertex indices.

  Returns:
    A scalar, mean over (B, F, 3 edges), in the vertices' unit.
  """
  _check_mesh_args(pred_verts, gt_verts, faces)

  def lengths(verts):
    c0, c1, c2 = _face_corners(_float(verts), faces)
    pairs = ((c0, c1), (c0, c2), (c1, c2))
    return jnp.stack([jnp.sqrt(jnp.sum((a - b) ** 2, axis=-1) + _EDGE_EPS) for a, b in pairs], axis=-1)

  return jnp.mean(jnp.abs(lengths(pred_verts) - lengths(gt_verts)))


def _normalize(x: chex.Array) -> chex.Array:
  """`F.normalize` along the last axis: `x / max(|x|, 1e-12)`, with a finite gradient at 0."""
  norm = jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _NORMALIZE_EPS**2))
  return x / norm


def normal_vector_loss(pred_verts: chex.Array, gt_verts: chex.Array, faces: chex.Array) -> chex.Array:
  """Mean |cos| between predicted face edges and the GT face normals (loss.py NormalVectorLoss).

  The GT normal is `n(n(g1 - g0) x n(g2 - g0))`; the predicted unit edges are `n(p1 - p0)`,
  `n(p2 - p0)`, `n(p2 - p1)`, with `n` = `F.normalize`. Zero when the predicted faces are parallel to
  the GT faces.

  Args:
    pred_verts: (B, V, 3) predicted vertices, any length unit.
    gt_verts: (B, V, 3) target vertices; scale and translation do not matter.
    faces: (F, 3) integer vertex indices (orientation does not matter: |cos|).

  Returns:
    A scalar in [0, 1], mean over (B, F, 3 edges).
  """
  _check_mesh_args(pred_verts, gt_verts, faces)
  p0, p1, p2 = _face_corners(_float(pred_verts), faces)
  g0, g1, g2 = _face_corners(_float(gt_verts), faces)
  normal_gt = _normalize(jnp.cross(_normalize(g1 - g0), _normalize(g2 - g0)))
  edges = jnp.stack([_normalize(p1 - p0), _normalize(p2 - p0), _normalize(p2 - p1)], axis=-2)
  return jnp.mean(jnp.abs(jnp.sum(edges * normal_gt[..., None, :], axis=-1)))


def weighted_cross_entropy(
    logits: chex.Array, labels: chex.Array, class_weights: Sequence[float] = (0.1, 0.45, 0.45)
) -> chex.Array:
  """Class-weighted softmax cross-entropy, `nn.CrossEntropyLoss(weight=w)` (dir.py:511).

  Args:
    logits: (B, H, W, C) unnormalised class scores.
    labels: (B, H, W) integer labels in [0, C).
    class_weights: C weights; the result is `sum_i w[y_i] nll_i / sum_i w[y_i]`.

  Returns:
    A scalar, nats.
  """
  chex.assert_rank(logits, 4)
  chex.assert_shape(labels, logits.shape[:-1])
  chex.assert_type(labels, int)
  chex.assert_axis_dimension(logits, 3, len(class_weights))
  log_probs = jax.nn.log_softmax(_float(logits), axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  class_weights = jnp.asarray(class_weights, log_probs.dtype)
  # Denominator from integer class counts: a float32 sum of 2048 copies of 0.1 drifts by ~2e-5.
  counts = jnp.bincount(labels.reshape(-1), length=class_weights.shape[0]).astype(log_probs.dtype)
  return jnp.sum(class_weights[labels] * nll) / jnp.sum(class_weights * counts)


def lovasz_grad(fg_sorted: chex.Array) -> chex.Array:
  """Gradient of the Lovász extension of the Jaccard loss w.r.t. errors sorted in descending order.

  Entry k is `J(M_k) - J(M_{k-1})`, with `M_k` the k+1 largest-error pixels, `J(M) = 1 - I / U`,
  `I = |fg minus M|`, `U = |fg union M|`, and `J(M_{-1}) = 0`. Instead of differencing the float
  Jaccard values (the reference's way, which loses ~1e-4 relative per entry in float32), each step
  uses its closed form: adding a foreground pixel lowers I by 1 (entry `1 / U_k`); adding a background
  pixel raises U by 1 (entry `I_k / (U_k U_{k-1})`). Entry 0 is `J(M_0)` itself (1 when there is no
  foreground, as in the reference).

  Args:
    fg_sorted: (P,) 0/1 (bool or numeric) foreground indicator in the order of decreasing error.

  Returns:
    (P,) float32 gradient (depends on the labels only).
  """
  chex.assert_rank(fg_sorted, 1)
  fg = fg_sorted.astype(jnp.int32)
  num_fg = jnp.sum(fg)
  # Integer counts: exact for any P.
  intersection = (num_fg - jnp.cumsum(fg)).astype(jnp.float32)
  union = (num_fg + jnp.cumsum(1 - fg)).astype(jnp.float32)  # >= 1 everywhere
  # U_{k-1}; entry 0 is replaced below, so clamping |fg| = 0 only avoids a 0/0 there.
  union_before = jnp.concatenate([jnp.maximum(num_fg, 1)[None].astype(jnp.float32), union[:-1]])
  step = jnp.where(fg == 1, 1.0 / union, intersection / (union * union_before))
  first = 1.0 - intersection[:1] / union[:1]
  return jnp.concatenate([first, step[1:]])


def _lovasz_flat(errors: chex.Array, fg: chex.Array) -> chex.Array:
  """(P,) errors, (P,) 0/1 foreground -> the scalar Lovász extension of the Jaccard loss."""
  order = jnp.argsort(errors, descending=True)
  grad = jax.lax.stop_gradient(lovasz_grad(fg[order]))
  return jnp.sum(errors[order] * grad.astype(errors.dtype))


def lovasz_softmax(scores: chex.Array, labels: chex.Array, classes: str = 'present') -> chex.Array:
  """Multi-class Lovász-Softmax loss, one pool over the whole batch (models/lovasz_loss.py).

  Per class c: errors `|1[y = c] - scores_c|` over all pixels, sorted in decreasing order and dotted
  with `lovasz_grad` of the sorted foreground; then the mean over classes. DIR passes raw logits as
  `scores` (docs/quirks.md#q18), so errors are not bounded by 1.

  With `classes='present'` only classes that occur in `labels` are averaged; this is done by masking
  (no data-dependent control flow), so the function is jit-able. No class present (no pixels) gives 0,
  as in the reference.

  Args:
    scores: (B, H, W, C) per-class scores (raw logits in DIR, probabilities in the original loss).
    labels: (B, H, W) integer labels in [0, C).
    classes: 'present' or 'all'.

  Returns:
    A scalar.
  """
  chex.assert_rank(scores, 4)
  chex.assert_shape(labels, scores.shape[:-1])
  chex.assert_type(labels, int)
  if classes not in ('present', 'all'):
    raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
  num_classes = scores.shape[-1]
  scores = _float(scores).reshape(-1, num_classes).T  # (C, P)
  fg = labels.reshape(-1)[None, :] == jnp.arange(num_classes)[:, None]  # (C, P) bool
  errors = jnp.abs(fg.astype(scores.dtype) - scores)
  per_class = jax.vmap(_lovasz_flat)(errors, fg)  # (C,)
  if classes == 'present':
    used = jnp.any(fg, axis=1).astype(per_class.dtype)
  else:
    used = jnp.ones_like(per_class)
  return jnp.sum(used * per_class) / jnp.maximum(jnp.sum(used), 1.0)


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def downsample_seg_nearest(seg: chex.Array, size: int | Sequence[int]) -> chex.Array:
  """Nearest resize of a label map, as `F.interpolate(mode='nearest')` (docs/quirks.md#q19).

  Output pixel i takes source pixel `floor(i * in / out)` per axis (pixel 8i for 256 -> 32).

  Args:
    seg: (B, H, W) labels (any dtype; kept).
    size: output size, an int or (h, w).

  Returns:
    (B, h, w) labels.
  """
  chex.assert_rank(seg, 3)
  out_h, out_w = _size_hw(size)
  rows = label_grid.nearest_indices(seg.shape[1], out_h)
  cols = label_grid.nearest_indices(seg.shape[2], out_w)
  return seg[:, rows][:, :, cols]


def downsample_dense_bilinear(dense: chex.Array, size: int | Sequence[int]) -> chex.Array:
  """Bilinear resize, `F.interpolate(mode='bilinear', align_corners=False)`, without antialiasing.

  For 256 -> 32 each output pixel is the mean of source pixels 8i+3 and 8i+4 per axis (docs/quirks.md#q19):
  `jax.image.resize` with `antialias=False` (no low-pass filter when shrinking, half-pixel centres).

  Args:
    dense: (B, H, W, C) values (DIR: dense correspondence in [0, 1]).
    size: output size, an int or (h, w).

  Returns:
    (B, h, w, C), float.
  """
  chex.assert_rank(dense, 4)
  out_h, out_w = _size_hw(size)
  dense = _float(dense)
  return jax.image.resize(dense, (dense.shape[0], out_h, out_w, dense.shape[3]), 'linear', antialias=False)


def _check_inputs(outputs: Mapping[str, Any], targets: Mapping[str, chex.Array], batch: int) -> None:
  """Shapes of `dir_losses`' inputs (see its docstring)."""
  chex.assert_rank(outputs['seg'], 4)
  chex.assert_equal_shape([outputs['seg'], outputs['dense']])
  for stage in outputs['stages']:
    for hand in HANDS:
      chex.assert_shape(stage[f'joint_uv_{hand}'], (batch, NUM_JOINTS, 2))
      chex.assert_shape(stage[f'mesh_uv_{hand}'], (batch, NUM_VERTS, 2))
      chex.assert_shape(stage[f'joint_xyz_{hand}'], (batch, NUM_JOINTS, 3))
      chex.assert_shape(stage[f'mesh_xyz_{hand}'], (batch, NUM_VERTS, 3))
    chex.assert_shape(stage['offset'], (batch, 3))
  for hand in HANDS:
    chex.assert_shape([targets[f'joint_2d_{hand}'], targets[f'joint_3d_{hand}']], (batch, NUM_JOINTS, 3))
    chex.assert_shape([targets[f'mesh_2d_{hand}'], targets[f'mesh_3d_{hand}']], (batch, NUM_VERTS, 3))
  chex.assert_rank(targets['seg'], 3)
  chex.assert_rank(targets['dense'], 4)
  chex.assert_axis_dimension(targets['seg'], 0, batch)
  chex.assert_equal_shape_prefix([targets['seg'], targets['dense']], 3)


def _normalised_gt(targets: Mapping[str, chex.Array], config: ml_collections.ConfigDict, center_idx: int):
  """GT joints and vertices centred and divided by xyz_norm_m, and the GT offset, per config.gt_center
  ('consistent': at joint `center_idx`, the one the network centres its outputs at).

  Returns:
    ({'joint_{hand}': (B, 21, 3), 'mesh_{hand}': (B, 778, 3)}, offset (B, 3)), units of xyz_norm_m.
  """
  if config.gt_center == 'reference':
    # The loader's centre (joint 9, middle MCP) while predictions are centred at the wrist (docs/quirks.md#q1).
    centers = {}
    for hand in HANDS:
      if f'center_{hand}' not in targets:
        raise KeyError(f"gt_center='reference' needs targets['center_{hand}'] (B, 3)")
      centers[hand] = _float(targets[f'center_{hand}'])
      chex.assert_shape(centers[hand], (targets[f'joint_3d_{hand}'].shape[0], 3))
  elif config.gt_center == 'consistent':
    centers = {hand: _float(targets[f'joint_3d_{hand}'])[:, center_idx] for hand in HANDS}
  else:
    raise ValueError(f"gt_center must be 'reference' or 'consistent', got {config.gt_center!r}")
  norm = config.xyz_norm_m
  gt = {
      f'{kind}_{hand}': (_float(targets[f'{kind}_3d_{hand}']) - centers[hand][:, None]) / norm
      for kind in ('joint', 'mesh')
      for hand in HANDS
  }
  return gt, (centers['right'] - centers['left']) / norm


def dir_losses(
    outputs: Mapping[str, Any],
    targets: Mapping[str, chex.Array],
    faces_left: chex.Array,
    faces_right: chex.Array,
    config: ml_collections.ConfigDict,
    *,
    center_idx: int,
) -> dict[str, chex.Array]:
  """Every DIR loss term, weighted, with the reference's names and order (docs/architecture.md#losses).

  GT centring (`config.gt_center`, docs/quirks.md#q1). The network's MANO layers return xyz centred at
  joint `center_idx` (the model's `ModelConfig.center_idx`; the wrist in DIR). The reference
  ('reference') instead centres the GT at the loader's `center_*` = GT joint 9 (middle MCP) and takes
  the offset target MCP-to-MCP, so the xyz and offset terms keep an irreducible part: a prediction equal
  to the wrist-centred GT is penalised by the wrist-to-MCP vector, so the minimiser is biased away from
  the true hand, and the offset is trained MCP-to-MCP but evaluated wrist-to-wrist. 'consistent' (the
  default) centres the GT at the same joint as the prediction and takes the offset between those joints,
  so a perfect prediction has zero loss; use 'reference' only to reproduce the reference's numbers.

  Args:
    outputs: the model's train-mode outputs:
      'stages': a sequence (stage 0 = initial regressor, then each refinement) of dicts with
        joint_uv_{left,right} (B, 21, 2) and mesh_uv_{left,right} (B, 778, 2), uv in [-1, 1];
        joint_xyz_{left,right} (B, 21, 3) and mesh_xyz_{left,right} (B, 778, 3), metres, centred at
        joint center_idx; offset (B, 3) right root minus left root, units of xyz_norm_m.
      'seg': (B, h, w, 3) segmentation logits; 'dense': (B, h, w, 3) dense map (h = w = 32 in DIR).
    targets: joint_2d_{left,right} (B, 21, 3) and mesh_2d_{left,right} (B, 778, 3) as (u, v, z) with
      uv in [-1, 1] (z unused); joint_3d_{left,right} (B, 21, 3) and mesh_3d_{left,right} (B, 778, 3),
      camera frame, metres; seg (B, H, W) integer labels and dense (B, H, W, 3) in [0, 1], at any
      resolution (resized to (h, w) here; H = W = 256 in DIR, or already h x w); center_{left,right}
      (B, 3) metres, used only with gt_center='reference'.
    faces_left: (1538, 3) int MANO faces of the left hand.
    faces_right: (1538, 3) int MANO faces of the right hand.
    config: see `default_loss_config`.
    center_idx: the joint the model centres its outputs at (`ModelConfig.center_idx`).

  Returns:
    {name: scalar}: `loss_term_names(len(outputs['stages']))` in that order, weights applied.
  """
  batch = outputs['seg'].shape[0]
  _check_inputs(outputs, targets, batch)
  weights = config.weights
  delta = config.huber_delta
  faces = {'left': jnp.asarray(faces_left), 'right': jnp.asarray(faces_right)}
  if config.lovasz_input not in ('logits', 'probabilities'):
    raise ValueError(f"lovasz_input must be 'logits' or 'probabilities', got {config.lovasz_input!r}")

  seg_logits = outputs['seg']
  head_hw = seg_logits.shape[1:3]
  # `.long()` after the resize, as the reference does (its labels arrive as floats).
  seg_labels = downsample_seg_nearest(targets['seg'], head_hw).astype(jnp.int32)
  dense_gt = downsample_dense_bilinear(targets['dense'], head_hw)
  lovasz_scores = seg_logits if config.lovasz_input == 'logits' else jax.nn.softmax(seg_logits, axis=-1)

  terms = {
      'seg': weighted_cross_entropy(seg_logits, seg_labels, tuple(config.seg_class_weights)) * weights.seg,
      'dense': huber(outputs['dense'], dense_gt, delta) * weights.dense,
      'lovasz': lovasz_softmax(lovasz_scores, seg_labels, config.lovasz_classes) * weights.lovasz,
  }
  gt_xyz, gt_offset = _normalised_gt(targets, config, center_idx)
  norm = config.xyz_norm_m
  for s, stage in enumerate(outputs['stages']):
    for kind in ('joint', 'mesh'):
      for hand in HANDS:
        terms[f'{kind}_{hand}_uv_{s}'] = (
            huber(stage[f'{kind}_uv_{hand}'], _float(targets[f'{kind}_2d_{hand}'])[..., :2], delta) * weights.uv
        )
    pred_xyz = {
        f'{kind}_{hand}': _float(stage[f'{kind}_xyz_{hand}']) / norm for kind in ('joint', 'mesh') for hand in HANDS
    }
    for kind in ('joint', 'mesh'):
      for hand in HANDS:
        name = f'{kind}_{hand}'
        terms[f'{name}_xyz_{s}'] = huber(pred_xyz[name], gt_xyz[name], delta) * weights.xyz
    for hand in HANDS:
      mesh_pred, mesh_gt = pred_xyz[f'mesh_{hand}'], gt_xyz[f'mesh_{hand}']
      terms[f'edge_{hand}_{s}'] = edge_length_loss(mesh_pred, mesh_gt, faces[hand]) * weights.edge
    for hand in HANDS:
      mesh_pred, mesh_gt = pred_xyz[f'mesh_{hand}'], gt_xyz[f'mesh_{hand}']
      terms[f'normal_{hand}_{s}'] = normal_vector_loss(mesh_pred, mesh_gt, faces[hand]) * weights.normal
    terms[f'offset_{s}'] = huber(stage['offset'], gt_offset, delta) * weights.offset
  return terms
