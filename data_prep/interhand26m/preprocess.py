"""Per-example preprocessing of InterHand2.6M for DIR (docs/architecture.md#data-preparation), as pure functions: no file access.

Steps for one annotation, in order (the first failing check names the skip reason):
1. Selection on the annotation and the JSON files (`annotation_reason`, `mano_reason`,
   `camera_from_raw`): for the subset 'interacting' (DIR's training and test data) an interacting
   annotation with a valid hand type; for 'all' (InterHand2.6M's own evaluation set) any
   annotation. The MANO of every hand its hand type names (`hand_sides`) present and finite, a
   camera known to camera.json; then the image file must exist.
2. The image (decoded by the caller): data.json's width x height (IMAGE_SIZE_MISMATCH otherwise,
   tested by the caller), mean intensity at least `MIN_MEAN_INTENSITY` (`image_reason`).
3. MANO NeuralAnnot (world frame) -> ground-truth layer parameters (`mano_params_world`) -> camera
   frame (`dir_jax.mano.rigid.transform_params`) -> vertices (`hand_mesh`), for the named hands; a
   hand a single-hand annotation does not name gets all-zero parameters (`ABSENT_HAND`).
4. The square crop around the named hands (`crop_affine`, `warp_to_crop`, `crop_intrinsics`), then the
   seg and dense targets rendered with the crop intrinsics (`render_targets`).

Pixel convention: `dir_jax.data.schema` (pixel i covers [i, i + 1)); the raw OpenCV principal point
gets +0.5 once, in `camera_from_raw`. The crop affine is applied in that continuous convention, so
the crop is centred exactly on the hands' box. (The reference applies the same formula with
cv2.warpAffine in OpenCV's integer-centre coordinates, which places its content half an output pixel
further right and down; each crop is consistent with its own intrinsics.)
"""

import io
import math
from typing import Any, Mapping

import jax
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from dir_jax.data import schema
from dir_jax.mano import ManoAsset, ManoPair, gt_mano, rigid
from dir_jax.render import rasterizer

CROP_SIZE_PX = schema.IMAGE_SIZE
HAND_BBOX_RATIO = 0.8  # the two hands' box spans this fraction of the crop's side (reference value)
MIN_MEAN_INTENSITY = 10.0  # darker images are skipped (mean over all pixels and channels, 0..255)
JPEG_QUALITY = 95
NEURALANNOT_SIZES = {'pose': 48, 'shape': 10, 'trans': 3}
# The stored MANO parameters of a hand that a single-hand annotation does not name.
ABSENT_HAND = {key: np.zeros(shape, np.float32) for key, shape in schema.MANO_SHAPES.items()}

# Skip reasons, in the order they are tested.
# An annotation or its image entry lacks an id, capture, frame, camera, file name, width or height, or
# the annotation's joint_valid (42 values) or bbox (4 finite values) is unusable.
ANNOTATION_INVALID = 'annotation_invalid'
NOT_INTERACTING = 'not_interacting'  # subset 'interacting' only: hand_type is 'right' or 'left'
HAND_TYPE_INVALID = 'hand_type_invalid'  # subset 'interacting' only: hand_type_valid is false
MANO_MISSING = 'mano_missing'  # no NeuralAnnot entry (or null) for the frame or one of the named hands
MANO_INVALID = 'mano_invalid'  # an entry with missing keys, wrong lengths or non-finite numbers
CAMERA_MISSING = 'camera_missing'  # capture or camera id absent from camera.json (or not finite)
IMAGE_MISSING = 'image_missing'  # no file at images/<split>/<file_name>, or no data.json image entry
IMAGE_CORRUPT = 'image_corrupt'  # the file does not decode as an image
IMAGE_SIZE_MISMATCH = 'image_size_mismatch'  # the decoded image is not data.json's width x height
IMAGE_DARK = 'image_dark'  # mean intensity below MIN_MEAN_INTENSITY
HANDS_BEHIND_CAMERA = 'hands_behind_camera'  # a vertex at depth <= the rasterizer's near plane
SKIP_REASONS = (
    ANNOTATION_INVALID,
    NOT_INTERACTING,
    HAND_TYPE_INVALID,
    MANO_MISSING,
    MANO_INVALID,
    CAMERA_MISSING,
    IMAGE_MISSING,
    IMAGE_CORRUPT,
    IMAGE_SIZE_MISMATCH,
    IMAGE_DARK,
    HANDS_BEHIND_CAMERA,
)


# What a build converts: 'interacting' keeps the interacting annotations with a valid hand type (the
# data DIR trains and is tested on); 'all' keeps every annotation whose named hands have MANO, as
# InterHand2.6M's evaluation keeps every annotation (hand_type_valid is stored, not required).
SUBSETS = ('interacting', 'all')


def check_subset(subset: str) -> None:
  """ValueError unless `subset` is one of SUBSETS."""
  if subset not in SUBSETS:
    raise ValueError(f'subset must be one of {SUBSETS}, got {subset!r}')


def hand_sides(hand_type: str) -> tuple[str, ...]:
  """The hands an annotation's `hand_type` names, in `schema.SIDES` order: both for 'interacting'."""
  return schema.SIDES if hand_type == 'interacting' else (hand_type,)


def annotation_reason(annotation: Mapping[str, Any], subset: str = 'interacting') -> str | None:
  """Skip reason of a data.json annotation from its hand type, or None when `subset` selects it."""
  if subset == 'all':
    return None
  if annotation.get('hand_type') != 'interacting':
    return NOT_INTERACTING
  if not annotation.get('hand_type_valid'):
    return HAND_TYPE_INVALID
  return None


_ALL_JOINTS_VALID = [[1]] * schema.INTERHAND_NUM_JOINTS  # data.json's joint_valid of a fully valid annotation


def annotation_fields(annotation: Mapping[str, Any]) -> dict[str, Any] | None:
  """The fields of a data.json annotation kept for evaluation, or None when one is unusable.

  Returns:
    `joint_valid_bits` (int: bit j set when `joint_valid[j]` is not 0; 42 joints, given as 42
    numbers or 42 one-element lists), `bbox` (4 finite floats: x, y, width, height), `hand_type`
    (index into `schema.HAND_TYPES`), `hand_type_valid` (0 or 1).
  """
  try:
    joint_valid = annotation['joint_valid']
    bbox = [float(v) for v in annotation['bbox']]
    hand_type = schema.HAND_TYPES.index(annotation.get('hand_type'))
    if len(joint_valid) != schema.INTERHAND_NUM_JOINTS or len(bbox) != 4 or not all(map(math.isfinite, bbox)):
      return None
    if joint_valid == _ALL_JOINTS_VALID:  # the common case, compared in C
      bits = (1 << schema.INTERHAND_NUM_JOINTS) - 1
    else:
      bits = 0
      for j, value in enumerate(joint_valid):
        if isinstance(value, list):
          (value,) = value
        if float(value) != 0.0:
          bits |= 1 << j
  except (KeyError, TypeError, ValueError):
    return None
  return {
      'joint_valid_bits': bits,
      'bbox': bbox,
      'hand_type': hand_type,
      'hand_type_valid': int(bool(annotation.get('hand_type_valid'))),
  }


def joints_world_mm(entry: Any) -> np.ndarray | None:
  """(42, 3) float64 of a joint_3d.json frame entry's `world_coord` (millimetres, world frame), NaN
  rows where a joint is not finite; None when the entry is not a dict with 42 triples."""
  try:
    world_mm = np.asarray(entry['world_coord'], np.float64)
  except (KeyError, TypeError, ValueError):
    return None
  if world_mm.shape != (schema.INTERHAND_NUM_JOINTS, 3):
    return None
  return np.where(np.all(np.isfinite(world_mm), axis=1, keepdims=True), world_mm, np.nan)


def joints_camera_m(
    world_mm: np.ndarray, valid: np.ndarray, camera: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
  """Triangulated joints in the camera frame of `camera_from_raw`, metres.

  Args:
    world_mm: (42, 3) `joints_world_mm` (NaN where not finite).
    valid: (42,) bool, data.json's joint validity.
    camera: `camera_from_raw` output (`X_cam = R X_world + t`, t in metres).

  Returns:
    joints (42, 3) float32 metres, 0 where not valid; validity (42,) bool: `valid` and finite.
  """
  valid = np.asarray(valid, bool) & np.all(np.isfinite(world_mm), axis=1)
  camera_m = np.asarray(world_mm, np.float64) / 1000.0 @ camera['rotation'].T + camera['translation_m']
  return np.where(valid[:, None], camera_m, 0.0).astype(np.float32), valid


def neuralannot_hand(entry: Any) -> dict[str, np.ndarray] | None:
  """One hand's NeuralAnnot entry as float64 arrays `pose (48,)`, `shape (10,)`, `trans (3,)`.

  Returns None when the entry is not a dict with finite lists of those lengths.
  """
  if not isinstance(entry, Mapping):
    return None
  hand = {}
  for key, size in NEURALANNOT_SIZES.items():
    try:
      value = np.asarray(entry[key], np.float64)
    except (KeyError, TypeError, ValueError):
      return None
    if value.shape != (size,) or not np.all(np.isfinite(value)):
      return None
    hand[key] = value
  return hand


def mano_reason(mano_frame: Any, sides: tuple[str, ...] = schema.SIDES) -> str | None:
  """Skip reason from a frame's NeuralAnnot dict `{'left': entry, 'right': entry}` (or None), for
  the hands `sides` (`hand_sides` of the annotation's hand type)."""
  if not isinstance(mano_frame, Mapping) or any(mano_frame.get(side) is None for side in sides):
    return MANO_MISSING
  if any(neuralannot_hand(mano_frame[side]) is None for side in sides):
    return MANO_INVALID
  return None


def camera_from_raw(camera_capture: Any, camera_id: str) -> dict[str, np.ndarray] | None:
  """A camera of camera.json in this project's conventions, or None when absent or malformed.

  Args:
    camera_capture: camera.json's entry of one capture: `{'campos': {cam: [3] mm},
      'camrot': {cam: [3x3]}, 'focal': {cam: [2] px}, 'princpt': {cam: [2] px}}`.
    camera_id: e.g. '400262'.

  Returns:
    `rotation` (3, 3) world -> camera (`camrot`), `translation_m` (3,) = -R campos / 1000 (so
    `X_cam = R X_world + t`), `K_px` (3, 3) intrinsics with the principal point moved by +0.5 to
    the pixel convention of `dir_jax.data.schema`; all float64.
  """
  try:
    campos_mm = np.asarray(camera_capture['campos'][camera_id], np.float64).reshape(3)
    rotation = np.asarray(camera_capture['camrot'][camera_id], np.float64).reshape(3, 3)
    focal_px = np.asarray(camera_capture['focal'][camera_id], np.float64).reshape(2)
    princpt_px = np.asarray(camera_capture['princpt'][camera_id], np.float64).reshape(2)
  except (KeyError, TypeError, ValueError):
    return None
  if not all(np.all(np.isfinite(a)) for a in (campos_mm, rotation, focal_px, princpt_px)):
    return None
  K_px = np.array([[focal_px[0], 0.0, princpt_px[0] + 0.5], [0.0, focal_px[1], princpt_px[1] + 0.5], [0.0, 0.0, 1.0]])
  return {'rotation': rotation, 'translation_m': -rotation @ campos_mm / 1000.0, 'K_px': K_px}


def image_reason(image_rgb_u8: np.ndarray) -> str | None:
  """IMAGE_DARK when the image's mean intensity is below MIN_MEAN_INTENSITY, else None."""
  return IMAGE_DARK if float(np.mean(image_rgb_u8)) < MIN_MEAN_INTENSITY else None


def axis_angle_to_rotmat(axis_angle: np.ndarray) -> np.ndarray:
  """(3,) axis-angle (radians) -> (3, 3) rotation matrix (float64)."""
  return Rotation.from_rotvec(np.asarray(axis_angle, np.float64)).as_matrix()


def mano_params_world(asset: ManoAsset, hand: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Ground-truth layer parameters (`dir_jax.mano.rigid` layout) of a NeuralAnnot hand, world frame.

  NeuralAnnot's `pose[3:]` is relative to the mean pose, so the full axis-angle is
  `pose[3:] + hands_mean` and its PCA coefficients are `axis2pca` of that (IntagHand's conversion): numerically
  `dir_jax.mano.axis_angle_to_pca` in float64.

  Args:
    asset: the hand's MANO model.
    hand: `neuralannot_hand` output (world frame, metres).

  Returns:
    `root_rotmat` (3, 3), `hand_pose` (45,) PCA coefficients, `betas` (10,), `trans` (3,) metres;
    float64.
  """
  # axis2pca(pose[3:] + hands_mean) = (pose[3:] + hands_mean - hands_mean) @ inv(components).
  hand_pose = np.asarray(hand['pose'][3:], np.float64) @ np.linalg.inv(np.asarray(asset.hands_components, np.float64))
  return {
      'root_rotmat': axis_angle_to_rotmat(hand['pose'][:3]),
      'hand_pose': hand_pose,
      'betas': np.asarray(hand['shape'], np.float64),
      'trans': np.asarray(hand['trans'], np.float64),
  }


def mano_params_camera(
    asset: ManoAsset, hand: Mapping[str, np.ndarray], camera: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
  """`mano_params_world` moved into the camera frame of `camera_from_raw` (float32)."""
  return rigid.transform_params(asset, mano_params_world(asset, hand), camera['rotation'], camera['translation_m'])


_gt_mano_jit = jax.jit(gt_mano, static_argnames=('pose_is_pca', 'center_idx'))


def hand_mesh(asset: ManoAsset, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Vertices (778, 3) and joints (21, 3), float32 metres, of `gt_mano` for one hand's parameters."""
  verts, joints = _gt_mano_jit(asset, *(np.asarray(params[k], np.float32)[None] for k in schema.MANO_KEYS))
  return np.asarray(verts[0]), np.asarray(joints[0])


def crop_affine(points_px: np.ndarray) -> np.ndarray:
  """The reference's crop as a (3, 3) affine map from image pixels to crop pixels.

  The square of half-side `L = max(w, h) / 2 / HAND_BBOX_RATIO` centred on the points' bounding box
  (width w, height h, centre mid) maps onto the `CROP_SIZE_PX` crop: `p_crop = s (p - mid + L)` with
  `s = CROP_SIZE_PX / 2 / L`.

  Args:
    points_px: (N, 2) pixel coordinates (x, y) of both hands' projected vertices.

  Returns:
    (3, 3) float64 `[[s, 0, s (L - mid_x)], [0, s, s (L - mid_y)], [0, 0, 1]]`.
  """
  lo, hi = points_px.min(axis=0), points_px.max(axis=0)
  mid = (lo + hi) / 2.0
  half_side = max(float(np.max(hi - lo)) / 2.0 / HAND_BBOX_RATIO, 1e-6)
  scale = CROP_SIZE_PX / 2.0 / half_side
  return np.array(
      [[scale, 0.0, scale * (half_side - mid[0])], [0.0, scale, scale * (half_side - mid[1])], [0.0, 0.0, 1.0]]
  )


def crop_intrinsics(K_px: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """(3, 3) intrinsics of the crop: `affine @ K_px` (fx, cx scaled and shifted; same for y)."""
  return np.asarray(affine, np.float64) @ np.asarray(K_px, np.float64)


def warp_to_crop(image_rgb_u8: np.ndarray, affine: np.ndarray, size: int = CROP_SIZE_PX) -> np.ndarray:
  """(size, size, 3) uint8: the image resampled through `affine`, bilinear, black outside.

  PIL's affine transform maps each output pixel centre (i + 0.5, j + 0.5) through the inverse
  affine and samples there with pixel centres at +0.5: the convention of `dir_jax.data.schema`.
  """
  inverse = np.linalg.inv(np.asarray(affine, np.float64))
  coefficients = tuple(float(c) for c in inverse[:2].reshape(-1))
  warped = Image.fromarray(np.asarray(image_rgb_u8, np.uint8)).transform(
      (size, size), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
  )
  return np.asarray(warped, np.uint8)


def dense_vertex_colors(pair: ManoPair) -> dict[str, np.ndarray]:
  """Per-vertex colours of the dense target: template coordinates normalised to [0, 1] per axis.

  The box is that of both hands' rest templates together (`v_template`, left and right), so the
  two hands get different colours (the left template lies at negative x, the right at positive x)
  and each colour names one point of one hand's surface.

  Returns:
    {'left': (778, 3), 'right': (778, 3)} float32 in [0, 1].
  """
  templates = {side: np.asarray(pair[side].v_template, np.float64) for side in schema.SIDES}
  both = np.concatenate(list(templates.values()))
  lo, hi = both.min(axis=0), both.max(axis=0)
  return {side: ((v - lo) / (hi - lo)).astype(np.float32) for side, v in templates.items()}


def render_targets(
    verts_cam_m: Mapping[str, np.ndarray],
    pair: ManoPair,
    K_px: np.ndarray,
    vertex_colors: Mapping[str, np.ndarray],
    size: int = CROP_SIZE_PX,
) -> tuple[np.ndarray, np.ndarray]:
  """Seg and dense targets of the hands, rendered together so they occlude each other.

  Args:
    verts_cam_m: {side: (778, 3) camera-frame vertices, metres} for one or both sides.
    pair: the MANO models (faces).
    K_px: (3, 3) intrinsics of the (size, size) crop.
    vertex_colors: `dense_vertex_colors(pair)`.
    size: crop side in pixels.

  Returns:
    seg (size, size, 1) uint8 in {SEG_BACKGROUND, SEG_RIGHT, SEG_LEFT}; dense (size, size, 3) uint8
    = round(255 * interpolated vertex colour), 0 on the background.
  """
  meshes = [
      (verts_cam_m[side], pair[side].faces, schema.SEG_LABEL[side], vertex_colors[side])
      for side in ('right', 'left')
      if side in verts_cam_m
  ]
  seg, dense = rasterizer.render_seg_dense(meshes, K_px, size, size)
  dense_u8 = np.clip(np.round(dense * 255.0), 0, 255).astype(np.uint8)
  return seg[..., None], dense_u8


def encode_jpeg(image_u8: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of an (H, W, 3) uint8 RGB image (PIL, fixed quality: same bytes for the same input)."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(image_u8, np.uint8)).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def encode_png(image_u8: np.ndarray) -> bytes:
  """PNG bytes of an (H, W, 1) or (H, W, 3) uint8 image."""
  image_u8 = np.asarray(image_u8, np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image_u8[..., 0] if image_u8.shape[-1] == 1 else image_u8).save(buffer, format='PNG')
  return buffer.getvalue()


def convert_example(
    record: Mapping[str, Any], image_rgb_u8: np.ndarray, pair: ManoPair, vertex_colors: Mapping[str, np.ndarray]
) -> tuple[str | None, dict[str, Any] | None]:
  """One selected annotation and its decoded image -> an example of `dir_jax.data.schema`.

  Args:
    record: a selected annotation (`data_prep.interhand26m.raw.SplitPlan.record`): `camera`
      (`camera_from_raw` output), `mano` ({side: `neuralannot_hand` output}), the identifiers
      `image_id`, `capture`, `frame`, `camera_id`, and the fields kept for evaluation
      (`joint_world_mm`, `joint_valid`, `bbox`, `hand_type`, `hand_type_valid`).
    image_rgb_u8: (H, W, 3) the raw image.
    pair: the MANO models (left fix applied).
    vertex_colors: `dense_vertex_colors(pair)`.

  Returns:
    (reason, None) when the example is skipped (IMAGE_DARK, HANDS_BEHIND_CAMERA), else
    (None, example) with encoded `image` (JPEG), `seg` and `dense` (PNG) bytes and the arrays of the
    schema. Only the hands `hand_sides(record['hand_type'])` names are used: their vertices place
    the crop and are rendered; another hand's parameters are `ABSENT_HAND`.
  """
  reason = image_reason(image_rgb_u8)
  if reason:
    return reason, None
  camera = record['camera']
  params, verts_cam_m = {}, {}
  for side in hand_sides(record['hand_type']):
    params[side] = mano_params_camera(pair[side], record['mano'][side], camera)
    verts_cam_m[side] = hand_mesh(pair[side], params[side])[0]
  all_verts_m = np.concatenate(list(verts_cam_m.values()))
  if not np.all(all_verts_m[:, 2] > rasterizer.DEFAULT_NEAR_M):
    return HANDS_BEHIND_CAMERA, None
  affine = crop_affine(rasterizer.project_perspective(all_verts_m, camera['K_px'])[:, :2])
  K_crop = crop_intrinsics(camera['K_px'], affine)
  seg, dense = render_targets(verts_cam_m, pair, K_crop, vertex_colors)
  example = {
      'image': encode_jpeg(warp_to_crop(image_rgb_u8, affine)),
      'seg': encode_png(seg),
      'dense': encode_png(dense),
      'intrinsics': K_crop.astype(np.float32),
      'mano': {
          side: {key: np.asarray(params.get(side, ABSENT_HAND)[key], np.float32) for key in schema.MANO_KEYS}
          for side in schema.SIDES
      },
      'capture': int(record['capture']),
      'frame': int(record['frame']),
      'camera': str(record['camera_id']),
      'image_id': int(record['image_id']),
      'hand_type': str(record['hand_type']),
      'hand_type_valid': bool(record['hand_type_valid']),
      'bbox_px': np.asarray(record['bbox'], np.float32),
  }
  example['joint_3d_cam_m'], example['joint_3d_valid'] = joints_camera_m(
      record['joint_world_mm'], record['joint_valid'], camera
  )
  return None, example
