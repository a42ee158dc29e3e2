"""Two hand meshes from RGB images with a trained DIR: the command-line predictor.

  python -m dir_jax.predict --checkpoint CKPT --images PATH_OR_GLOB --out DIR
      [--bbox x0,y0,x1,y1] [--mano_dir MANO] [--batch_size 8] [--render_size 256] [--compilation_cache DIR]

CKPT is an orbax location: a `train.py` workdir RUN (its newest checkpoint in RUN/checkpoints, not
RUN/best), RUN/checkpoints or RUN/best (their newest step), one step folder such as RUN/best/1200
(exactly that step), or `python -m dir_jax.convert.export_orbax` output. PATH_OR_GLOB is an image file,
a folder (its .jpg/.jpeg/.png files, sorted) or a glob (the image files it matches). Images are read
with their EXIF orientation applied, as RGB.

MANO. `--mano_dir` when given; else the MANO folder the checkpoint was trained with (`train.py`
checkpoints remember it; an error asks for `--mano_dir` when that folder is gone); else ./mano (the
converted authors' checkpoint and older checkpoints remember none). The choice is printed.

Compilation. The network is compiled once per run for the batch size; `--compilation_cache` keeps the
compiled program on disk (default ~/.cache/dir_jax/jax_cache, under $XDG_CACHE_HOME when set; '' turns
it off), so a later run of a model of the same configuration at the same batch size loads it instead.
The compile time is printed.

Crop. Pixel (col i, row j) covers [i, i+1) x [j, j+1) (`dir_jax.data.schema`). With `--bbox` (the
box around both hands, in pixels of the upright image) the crop is the square centred on the box
whose side is the box's longer side / 0.8, so the hands fill 80 % of it as in the training crops
(docs/architecture.md#data-preparation). Without a box the crop is the whole image padded to a
centred square with black, as the training crops are padded at image borders: nothing is cut off,
but the hands fill less of the crop than in training, so give a box when they are small in the
picture. The square is resampled
(bilinear, antialiased when shrinking) to the network's input side (the one the checkpoint was trained
with, else 16x the first stage's grid: 256 for the released model) and, for the pictures, to
`--render_size`; `prediction.json` records the square in image pixels.

Camera. DIR's camera is weak-perspective per hand: uv = s * xyz[:2] + (tu, tv), xyz in metres centred
at the hand's root, uv in [-1, 1] across the crop: pixel x = (u + 1) * W / 2 in a W-pixel picture.
For rendering, both hands are placed in one pinhole camera (`weak_perspective_scene`) with a long focal
length F = 100 W px and principal point (W/2, W/2). The left root is at depth Z - 0.15 * offset_z / 2,
the right at Z + 0.15 * offset_z / 2, so the predicted offset orders the hands in depth and they
occlude each other correctly; Z = 2F / (sbar W), sbar the mean |s| of the two hands. Each hand is
scaled about its root by kappa = s W Z_root / (2F) (1 when both hands' scales agree with one depth) and
its root moved sideways by t W Z_root / (2F) metres (t / s when kappa = 1), so points at the root's
depth project exactly to their weak-perspective pixels. A point at depth z from its root lands off by
its distance from the crop centre times |kappa z| / (Z_root + |kappa| z): at most W s|z| / 400 px
inside the crop (0.08 px for W = 256, s = 6 /m, |z| = 2 cm). A negative s (a hand upside down in the
picture) becomes a rotation by 180 degrees about the optical axis.
The authors' checkpoint was trained on crops in OpenCV's integer-centre convention
(docs/architecture.md#data-preparation), whose content sits half an input pixel right of and below
ours (`data_prep/interhand26m/preprocess.py`): with it, drawings are up to half a 256-px pixel up and
left of the hands.

Outputs per image, in DIR/<image stem>/ (stems that repeat get _2, _3, ...):
  prediction.json  per hand: MANO parameters of the last stage (the 64-vector split into root_6d,
                   pose_pca, betas, camera = [s, tu, tv]; the root rotation as a 3x3 matrix), 21 joints
                   in metres centred at the model's centre joint (the wrist for the released model), 2D
                   joints in crop pixels, in image pixels and in uv, the hand's placement in the render
                   camera; the offset in metres; the crop; the render camera.
  left.obj, right.obj  each hand, metres, centred at its centre joint.
  hands.ply        both hands with vertex colours, the right placed at the left's centre joint +
                   0.15 * offset (the offset is right root minus left root; docs/quirks.md#q1: the released
                   model's offset was trained between the middle-finger MCP joints).
  overlay.png      the shaded hands over the crop (left and right in their colours).
  side.png         the 3D prediction of hands.ply seen from the right of the camera.
  stages.png       one overlay per stage: initial, stage 1, stage 2, ... (as the paper's Fig. 5).

Images that cannot be used (unreadable, smaller than 32 px, box outside) are reported and skipped;
the exit status is 1 when any image failed, 2 on a setup error (checkpoint, MANO, no images) or a bad flag.
"""

import dataclasses
import glob
import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image, ImageOps
from tqdm import tqdm

from dir_jax import checkpoint, cli, compilation_cache, inference
from dir_jax.data import image_io
from dir_jax.mano import ManoAssetError, ManoPair, UnsafePickleError, load_mano_pair
from dir_jax.mano.constants import JOINT_NAMES_21, SIDES
from dir_jax.mano.rotation import rot6d_to_matrix
from dir_jax.model.dir import DIR
from dir_jax.model.config import OFFSET_UNIT_M
from dir_jax.render import export, overlay
from dir_jax.render.stages_figure import titled_row

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
MIN_IMAGE_SIDE_PX = 32
HAND_BOX_FILL = 0.8  # the hands' box spans 80 % of the training crops' side (the reference's HAND_BBOX_RATIO)
MAX_BOX_TO_IMAGE = 2.0  # a --bbox side may exceed the image's longer side at most this much (bounds the padded canvas)
# Render camera focal length in crop sides: long enough that the depth extent of a hand moves its
# vertices by well under a pixel from their weak-perspective positions (module docstring).
FOCAL_PER_CROP_SIDE = 100.0
MIN_CAMERA_SCALE = 1e-3  # |s| (uv units per metre) below which the render depth stops growing
HAND_RGB = {'left': overlay.LEFT_HAND_RGB, 'right': overlay.RIGHT_HAND_RGB}
SIDE_VIEW_YAW_DEG = 90.0
JSON_DECIMALS = 6
MANO_URL = 'https://mano.is.tue.mpg.de'
DEFAULT_MANO_DIR = 'mano'  # when neither --mano_dir nor the checkpoint names a MANO folder
CHECKPOINT_HELP = (
    'a checkpoint is made by `python train.py --config=configs/dir_reference.py --workdir=RUN` or, from '
    "the authors' checkpoint, by `python -m dir_jax.convert.export_orbax "
    '--torch_checkpoint DIR_released.pth --out FOLDER`'
)
_STAGE_KEYS = ('mesh_xyz', 'joint_xyz', 'mesh_uv', 'joint_uv', 'mano_para', 'camera')


class ImageInputError(ValueError):
  """One image cannot be used; the message names the file, the problem and what to do."""


class SetupError(RuntimeError):
  """Nothing can be predicted (no images, no checkpoint, no MANO); the message says what to do."""


# ------------------------------------------------------------------------------------------------
# Images and crops


def list_images(spec: str) -> list[str]:
  """The image files named by `spec`: a file, a folder (its .jpg/.jpeg/.png, sorted) or a glob."""
  if os.path.isfile(spec):
    return [spec]
  if os.path.isdir(spec):
    paths = [os.path.join(spec, name) for name in os.listdir(spec)]
  else:
    paths = glob.glob(spec, recursive=True)
  paths = sorted(p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise SetupError(
        f'no images found at {spec!r}: give an image file, a folder holding .jpg/.jpeg/.png files '
        'or a quoted glob such as "photos/*.jpg"'
    )
  return paths


def output_names(paths: Sequence[str]) -> list[str]:
  """One folder name per image: its stem, with _2, _3, ... for stems seen before."""
  names, used = [], set()
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, k = stem, 2
    while name in used:
      name, k = f'{stem}_{k}', k + 1
    used.add(name)
    names.append(name)
  return names


def load_image(path: str) -> np.ndarray:
  """(H, W, 3) uint8 RGB of an image file, EXIF orientation applied.

  Raises:
    ImageInputError: the file cannot be decoded or is smaller than MIN_IMAGE_SIDE_PX on a side.
  """
  try:
    with Image.open(path) as image:
      rgb = image_io.to_rgb_u8(ImageOps.exif_transpose(image))
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ImageInputError(
        f'{path}: cannot read the image ({type(e).__name__}: {e}); replace it with a complete JPEG or PNG file'
    ) from e
  height, width = rgb.shape[:2]
  if min(height, width) < MIN_IMAGE_SIDE_PX:
    raise ImageInputError(
        f'{path}: the image is {width}x{height} px, smaller than {MIN_IMAGE_SIDE_PX} px on a '
        'side; give a larger image of the hands'
    )
  return rgb


@dataclasses.dataclass(frozen=True)
class CropSquare:
  """A square of the image: centre and half side in pixels (pixel i covers [i, i + 1))."""

  center_x_px: float
  center_y_px: float
  half_side_px: float

  @property
  def box_px(self) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) corners in image pixels."""
    return (
        self.center_x_px - self.half_side_px,
        self.center_y_px - self.half_side_px,
        self.center_x_px + self.half_side_px,
        self.center_y_px + self.half_side_px,
    )

  def image_to_crop(self, size_px: int) -> np.ndarray:
    """(2, 3) affine from image pixels to the pixels of the square resampled to `size_px`."""
    scale = size_px / (2.0 * self.half_side_px)
    x0, y0 = self.box_px[:2]
    return np.array([[scale, 0.0, -scale * x0], [0.0, scale, -scale * y0]])

  def crop_to_image(self, points_px: np.ndarray, size_px: int) -> np.ndarray:
    """(N, 2) crop pixels of a `size_px` crop -> (N, 2) image pixels."""
    x0, y0 = self.box_px[:2]
    return np.asarray(points_px, np.float64) * (2.0 * self.half_side_px / size_px) + [x0, y0]


def crop_square(width_px: int, height_px: int, bbox_px: Sequence[float] | None = None) -> CropSquare:
  """The crop of an image (module docstring): around `bbox_px` at 80 % fill, else the padded image.

  Args:
    width_px, height_px: image size.
    bbox_px: (x0, y0, x1, y1) box around the hands in image pixels, or None.

  Raises:
    ImageInputError: the box does not overlap the image (the message lacks the file name).
  """
  if bbox_px is None:
    return CropSquare(width_px / 2.0, height_px / 2.0, max(width_px, height_px) / 2.0)
  x0, y0, x1, y1 = (float(v) for v in bbox_px)
  if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
    raise ImageInputError(f'--bbox {x0:g},{y0:g},{x1:g},{y1:g} is not a box; give finite x0 < x1 and y0 < y1')
  if x1 <= 0 or y1 <= 0 or x0 >= width_px or y0 >= height_px:
    raise ImageInputError(
        f'--bbox {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width_px}x{height_px} image; '
        "give a box in this image's pixels"
    )
  if max(x1 - x0, y1 - y0) > MAX_BOX_TO_IMAGE * max(width_px, height_px):
    raise ImageInputError(
        f'--bbox {x0:g},{y0:g},{x1:g},{y1:g} is more than {MAX_BOX_TO_IMAGE:g}x the '
        f"{width_px}x{height_px} image; give a box around the hands in this image's pixels"
    )
  return CropSquare((x0 + x1) / 2.0, (y0 + y1) / 2.0, max(x1 - x0, y1 - y0) / 2.0 / HAND_BOX_FILL)


def crop_image(image_rgb_u8: np.ndarray, square: CropSquare, size_px: int) -> np.ndarray:
  """(size_px, size_px, 3) uint8: `square` resampled (bilinear, antialiased), black outside the image."""
  height, width = image_rgb_u8.shape[:2]
  x0, y0, x1, y1 = square.box_px
  pad_left, pad_top = max(0, math.ceil(-x0)), max(0, math.ceil(-y0))
  pad_right, pad_bottom = max(0, math.ceil(x1 - width)), max(0, math.ceil(y1 - height))
  canvas = Image.new('RGB', (width + pad_left + pad_right, height + pad_top + pad_bottom))
  canvas.paste(Image.fromarray(image_rgb_u8), (pad_left, pad_top))
  box = (x0 + pad_left, y0 + pad_top, x1 + pad_left, y1 + pad_top)
  return np.asarray(canvas.resize((size_px, size_px), Image.Resampling.BILINEAR, box=box), np.uint8)


@dataclasses.dataclass(frozen=True)
class PreparedImage:
  """One image ready for the network: its crop at the input side and at the picture side."""

  path: str
  size_px: tuple[int, int]  # (width, height) of the upright image
  square: CropSquare
  input_u8: np.ndarray  # (S, S, 3) network input crop
  render_u8: np.ndarray  # (W, W, 3) crop for the pictures


def prepare_image(path: str, bbox_px: Sequence[float] | None, input_px: int, render_px: int) -> PreparedImage:
  """Reads and crops one image; ImageInputError (naming the file) when it cannot be used."""
  image = load_image(path)
  height, width = image.shape[:2]
  try:
    square = crop_square(width, height, bbox_px)
  except ImageInputError as e:
    raise ImageInputError(f'{path}: {e}') from e
  input_u8 = crop_image(image, square, input_px)
  render_u8 = input_u8 if render_px == input_px else crop_image(image, square, render_px)
  return PreparedImage(path, (width, height), square, input_u8, render_u8)


# ------------------------------------------------------------------------------------------------
# Network


class Predictor:
  """A restored DIR, jit-compiled in eval mode for batches of `batch_size` crops.

  Calling it with up to `batch_size` (S, S, 3) uint8 crops returns, per crop, a list of stage results
  (stage 0 = initial, then one per refinement stage), each a dict of float32 numpy arrays without the
  batch axis: `{mesh_xyz, joint_xyz, mesh_uv, joint_uv, mano_para, camera}_{side}` as in `DIR`,
  `root_rotmat_{side}` (3, 3) and `offset` (3,) in units of 0.15 m. A short batch is zero-padded.

  Attributes:
    input_px: the crops' side S: `input_px` if given (the checkpoint's recorded input side), else
      `inference.input_side_px(model.config)`.
    compile_s: seconds spent compiling (or loading from the persistent compilation cache).
    network_s: seconds in the network calls so far, transfers to and from the device included.
    images: crops run so far (padding excluded).
  """

  def __init__(
      self, model: DIR, variables: Mapping[str, Any], mano: ManoPair, batch_size: int, input_px: int | None = None
  ):
    self.model, self.variables, self.batch_size = model, variables, batch_size
    self.input_px = input_px or inference.input_side_px(model.config)
    self.mano = jax.device_put(mano)
    self.network_s, self.images = 0.0, 0
    tic = time.perf_counter()
    spec = jax.ShapeDtypeStruct((batch_size, self.input_px, self.input_px, 3), jnp.uint8)
    self._forward = jax.jit(self._stages).lower(variables, spec, self.mano).compile()
    self.compile_s = time.perf_counter() - tic

  def _stages(self, variables, images_u8, mano):
    stages = inference.forward(variables, images_u8, mano, model=self.model, input_size=self.input_px)['stages']
    results = []
    for stage in stages:
      result = {'offset': stage['offset'].astype(jnp.float32)}
      for side in SIDES:
        result.update({f'{key}_{side}': stage[f'{key}_{side}'].astype(jnp.float32) for key in _STAGE_KEYS})
        result[f'root_rotmat_{side}'] = jax.vmap(rot6d_to_matrix)(result[f'mano_para_{side}'][:, :6])
      results.append(result)
    return results

  def __call__(self, crops_u8: Sequence[np.ndarray]) -> list[list[dict[str, np.ndarray]]]:
    if not 1 <= len(crops_u8) <= self.batch_size:
      raise ValueError(f'expected 1 to {self.batch_size} crops, got {len(crops_u8)}')
    images = np.zeros((self.batch_size, self.input_px, self.input_px, 3), np.uint8)
    images[: len(crops_u8)] = np.stack(crops_u8)
    tic = time.perf_counter()
    outputs = jax.device_get(self._forward(self.variables, images, self.mano))
    self.network_s += time.perf_counter() - tic
    self.images += len(crops_u8)
    return [[{key: value[i] for key, value in stage.items()} for stage in outputs] for i in range(len(crops_u8))]


# ------------------------------------------------------------------------------------------------
# Camera and pictures


def weak_perspective_scene(
    verts_m: Mapping[str, np.ndarray],
    cameras: Mapping[str, np.ndarray],
    offset_015m: np.ndarray,
    size_px: int,
    focal_per_side: float = FOCAL_PER_CROP_SIDE,
) -> tuple[dict, np.ndarray, dict]:
  """Both hands in one pinhole camera that reproduces their weak-perspective projections.

  See the module docstring for the construction and its error bound.

  Args:
    verts_m: {'left', 'right'}: (V, 3) metres, centred at the hand's root (the model's centre joint).
    cameras: {'left', 'right'}: (3,) weak-perspective (s, tu, tv); uv = s * xyz[:2] + t in [-1, 1].
    offset_015m: (3,) right root minus left root, units of 0.15 m (only z is used: depth order).
    size_px: side W of the square picture in pixels.
    focal_per_side: focal length in units of W.

  Returns:
    verts_cam_m: {'left', 'right'}: (V, 3) camera frame (OpenCV: x right, y down, z forward), metres.
    K: (3, 3) intrinsics in pixels, pixel centres at +0.5 (`dir_jax.render.rasterizer`).
    placement: {'left', 'right'}: {'translation_m': (3,) root position, 'scale': kappa}.
  """
  focal_px = focal_per_side * size_px
  K = np.array([[focal_px, 0.0, size_px / 2.0], [0.0, focal_px, size_px / 2.0], [0.0, 0.0, 1.0]])
  cameras = {side: np.asarray(cameras[side], np.float64) for side in SIDES}
  mean_scale = max(np.mean([abs(cameras[side][0]) for side in SIDES]), MIN_CAMERA_SCALE)
  mean_depth_m = 2.0 * focal_px / (mean_scale * size_px)
  half_gap_m = OFFSET_UNIT_M * float(offset_015m[2]) / 2.0
  verts_cam_m, placement = {}, {}
  for side, depth_m in (('left', mean_depth_m - half_gap_m), ('right', mean_depth_m + half_gap_m)):
    s, tu, tv = cameras[side]
    metres_per_uv = size_px * depth_m / (2.0 * focal_px)  # lateral metres at the root's depth per uv unit
    kappa = s * metres_per_uv
    root_m = np.array([tu * metres_per_uv, tv * metres_per_uv, depth_m])
    # diag(kappa, kappa, |kappa|): a scale, turned 180 degrees about the optical axis when s < 0.
    verts_cam_m[side] = root_m + np.asarray(verts_m[side], np.float64) * [kappa, kappa, abs(kappa)]
    placement[side] = {'translation_m': root_m, 'scale': kappa}
  return verts_cam_m, K, placement


def stage_scene(stage: Mapping[str, np.ndarray], size_px: int) -> tuple[dict, np.ndarray, dict]:
  """`weak_perspective_scene` of one image's stage result (`mesh_xyz_{side}`, `camera_{side}`, `offset`)."""
  return weak_perspective_scene(
      {side: stage[f'mesh_xyz_{side}'] for side in SIDES},
      {side: stage[f'camera_{side}'] for side in SIDES},
      stage['offset'],
      size_px,
  )


def uv_to_px(uv: np.ndarray, size_px: int) -> np.ndarray:
  """(..., 2) normalised coordinates in [-1, 1] -> pixels of a `size_px` square (centres at +0.5)."""
  return (np.asarray(uv, np.float64) + 1.0) * (size_px / 2.0)


def render_hands(
    image_rgb_u8: np.ndarray, stage: Mapping[str, np.ndarray], faces: Mapping[str, np.ndarray]
) -> np.ndarray:
  """(W, W, 3) uint8: one stage's shaded hands over the square crop they were predicted on.

  Args:
    image_rgb_u8: (W, W, 3) the crop (at any resolution W: uv spans the whole square).
    stage: one image's stage result: `mesh_xyz_{side}` (778, 3) m, `camera_{side}` (3,), `offset` (3,).
    faces: {'left', 'right'}: (1538, 3) int.
  """
  verts_cam_m, K, _ = stage_scene(stage, image_rgb_u8.shape[0])
  meshes = [(verts_cam_m[side], faces[side], HAND_RGB[side]) for side in SIDES]
  return overlay.render_overlay(image_rgb_u8, meshes, K)


def placed_meshes(stage: Mapping[str, np.ndarray], faces: Mapping[str, np.ndarray]) -> list[export.Mesh]:
  """The 3D prediction: left hand at its centre joint (origin), right at + 0.15 * offset; metres."""
  offset_m = OFFSET_UNIT_M * np.asarray(stage['offset'], np.float64)
  return [
      (np.asarray(stage['mesh_xyz_left'], np.float64), faces['left'], HAND_RGB['left']),
      (np.asarray(stage['mesh_xyz_right'], np.float64) + offset_m, faces['right'], HAND_RGB['right']),
  ]


def stage_titles(model: DIR) -> list[str]:
  return ['initial'] + [f'stage {i + 1} ({spec.size}x{spec.size})' for i, spec in enumerate(model.config.stages)]


# ------------------------------------------------------------------------------------------------
# Writing one image's results


def _rounded(values) -> Any:
  return np.round(np.asarray(values, np.float64), JSON_DECIMALS).tolist()


def to_json(value: Any, depth: int = 0) -> str:
  """Indented JSON (one space per level) with each list of numbers or strings on one line."""
  inner, outer = ' ' * (depth + 1), ' ' * depth
  if isinstance(value, dict):
    items = [f'{inner}{json.dumps(key)}: {to_json(item, depth + 1)}' for key, item in value.items()]
    return '{\n' + ',\n'.join(items) + '\n' + outer + '}'
  if isinstance(value, list) and any(isinstance(item, (list, dict)) for item in value):
    return '[\n' + ',\n'.join(inner + to_json(item, depth + 1) for item in value) + '\n' + outer + ']'
  return json.dumps(value)


def prediction_record(
    stage: Mapping[str, np.ndarray], square: CropSquare, render_size_px: int, center_joint: int
) -> dict[str, Any]:
  """The JSON-ready description of one image's last-stage prediction (see the module docstring)."""
  _, K, placement = stage_scene(stage, render_size_px)
  record: dict[str, Any] = {
      'joint_names': list(JOINT_NAMES_21),
      'center_joint': JOINT_NAMES_21[center_joint],
      'offset_m': _rounded(OFFSET_UNIT_M * np.asarray(stage['offset'])),
      'render_camera': {'K_px': _rounded(K), 'size_px': render_size_px},
  }
  for side in SIDES:
    para = np.asarray(stage[f'mano_para_{side}'])
    joints_crop_px = uv_to_px(stage[f'joint_uv_{side}'], render_size_px)
    record[side] = {
        'mano': {
            'root_6d': _rounded(para[0:6]),
            'root_rotmat': _rounded(stage[f'root_rotmat_{side}']),
            'pose_pca': _rounded(para[6:51]),
            'betas': _rounded(para[51:61]),
            'camera': _rounded(para[61:64]),
        },
        'joints_3d_m': _rounded(stage[f'joint_xyz_{side}']),
        'joints_uv': _rounded(stage[f'joint_uv_{side}']),
        'joints_2d_crop_px': _rounded(joints_crop_px),
        'joints_2d_image_px': _rounded(square.crop_to_image(joints_crop_px, render_size_px)),
        'render_placement': {
            'translation_m': _rounded(placement[side]['translation_m']),
            'scale': _rounded(placement[side]['scale']),
        },
    }
  return record


def write_outputs(
    folder: str,
    stages: Sequence[Mapping[str, np.ndarray]],
    crop_rgb_u8: np.ndarray,
    square: CropSquare,
    faces: Mapping[str, np.ndarray],
    titles: Sequence[str],
    info: Mapping[str, Any],
    center_joint: int,
) -> None:
  """Writes prediction.json, left.obj, right.obj, hands.ply, overlay.png, side.png, stages.png.

  Args:
    folder: output folder of this image (created).
    stages: this image's stage results (numpy, no batch axis); the last is the prediction.
    crop_rgb_u8: (W, W, 3) the crop for the pictures.
    square: the crop in image pixels.
    faces: {'left', 'right'}: (1538, 3) int.
    titles: one per stage, for stages.png.
    info: extra JSON fields (image, crop, checkpoint).
    center_joint: index of the joint the model centres xyz at.
  """
  final = stages[-1]
  os.makedirs(folder, exist_ok=True)
  record = dict(info, **prediction_record(final, square, crop_rgb_u8.shape[0], center_joint))
  with open(os.path.join(folder, 'prediction.json'), 'w', encoding='utf-8') as f:
    f.write(to_json(record) + '\n')
  for side in SIDES:
    export.write_obj(
        os.path.join(folder, f'{side}.obj'),
        final[f'mesh_xyz_{side}'],
        faces[side],
        header=f'dir-jax {side} hand, metres, centred at its {JOINT_NAMES_21[center_joint]}',
    )
  placed = placed_meshes(final, faces)
  export.write_colored_ply(os.path.join(folder, 'hands.ply'), placed)
  panels = [render_hands(crop_rgb_u8, stage, faces) for stage in stages]
  overlay.save_png(os.path.join(folder, 'overlay.png'), panels[-1])
  overlay.save_png(
      os.path.join(folder, 'side.png'),
      overlay.render_side_view(placed, size=crop_rgb_u8.shape[0], yaw_deg=SIDE_VIEW_YAW_DEG),
  )
  overlay.save_png(os.path.join(folder, 'stages.png'), titled_row(panels, titles))


# ------------------------------------------------------------------------------------------------
# Command line


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
  """`--bbox x0,y0,x1,y1` -> four floats; ValueError (absl prefixes the flag) unless they make a finite box."""
  try:
    x0, y0, x1, y1 = (float(v) for v in text.split(','))
  except ValueError as e:
    raise ValueError(f'expected x0,y0,x1,y1 (four numbers), got {text!r}') from e
  if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
    raise ValueError(f'expected four finite numbers, got {text!r}')
  if not (x1 > x0 and y1 > y0):
    raise ValueError(f'expected x0 < x1 and y0 < y1, got {text!r}')
  return x0, y0, x1, y1


class _BoxParser(flags.ArgumentParser):
  """absl parser of `--bbox`: `_parse_bbox`."""

  syntactic_help = 'x0,y0,x1,y1'

  def parse(self, argument):
    return _parse_bbox(argument) if isinstance(argument, str) else argument

  def flag_type(self) -> str:
    return 'box'


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string(
    'checkpoint',
    None,
    'train.py workdir, its checkpoints/ or best/, one step folder in them, or export_orbax output',
    flag_values=FLAGS,
    required=True,
)
flags.DEFINE_string(
    'images', None, 'image file, folder of .jpg/.jpeg/.png, or a quoted glob', flag_values=FLAGS, required=True
)
flags.DEFINE_string('out', None, 'output folder; one subfolder per image', flag_values=FLAGS, required=True)
flags.DEFINE(
    _BoxParser(),
    'bbox',
    None,
    'box around both hands in image pixels (used for every image)',
    flag_values=FLAGS,
    serializer=flags.ListSerializer(','),
)
flags.DEFINE_string(
    'mano_dir',
    None,
    'folder with MANO_LEFT and MANO_RIGHT (.pkl or .npz); default: the one the '
    f'checkpoint was trained with, else {DEFAULT_MANO_DIR}',
    flag_values=FLAGS,
)
flags.DEFINE_integer('batch_size', 8, 'images per network call', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('render_size', 256, 'side of the pictures in pixels', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string(
    'compilation_cache',
    None,
    'persistent compilation cache folder (default: ' f'{compilation_cache.default_cache_dir()}; empty turns it off)',
    flag_values=FLAGS,
)


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
  """Parses the command line (argv[0]: the program) into `FLAGS` and returns them (`cli.parse`: exits on --help
  and on a bad command line, naming the flag)."""
  cli.parse(FLAGS, argv, __doc__)
  return FLAGS


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs before its first image, and where each part came from."""

  paths: list[str]  # the images
  restored: checkpoint.RestoredCheckpoint
  mano: ManoPair
  mano_dir: str
  mano_source: str  # where the MANO folder choice came from: --mano_dir, the checkpoint or the default
  cache_dir: str | None  # persistent compilation cache folder; None = off


def _load_setup(args: flags.FlagValues) -> Setup:
  """The run's images, checkpoint, MANO and compilation cache, or SetupError naming the input and what to do."""
  try:  # first: JAX opens the cache at the process's first compilation
    cache_dir = compilation_cache.configure(args.compilation_cache)
  except compilation_cache.CompilationCacheError as e:
    raise SetupError(str(e)) from e
  paths = list_images(args.images)
  try:
    restored = checkpoint.restore_checkpoint(args.checkpoint)
  except checkpoint.CheckpointError as e:
    raise SetupError(f'cannot load the checkpoint {args.checkpoint!r}: {e}. {CHECKPOINT_HELP}.') from e
  try:
    mano_dir, mano_source = checkpoint.mano_dir_choice(args.mano_dir, restored, DEFAULT_MANO_DIR, '--mano_dir')
  except checkpoint.ManoDirGoneError as e:
    raise SetupError(str(e)) from e
  try:
    mano = load_mano_pair(mano_dir)
  except (FileNotFoundError, ManoAssetError, UnsafePickleError) as e:
    message = f'cannot load MANO from {mano_dir!r} ({mano_source}): {e}'
    if MANO_URL not in message:
      message += (
          f' --mano_dir must hold the MANO model files MANO_LEFT.pkl and MANO_RIGHT.pkl from {MANO_URL} '
          '(or the .npz files of python -m data_prep.synthetic_mano).'
      )
    raise SetupError(message) from e
  return Setup(paths, restored, mano, mano_dir, mano_source, cache_dir)


def main(argv: Sequence[str]) -> int:
  """Runs the predictor on the command line `argv` (argv[0]: the program); returns the exit status."""
  args = parse_args(argv)
  try:
    setup = _load_setup(args)
  except SetupError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  paths, mano, restored, model = setup.paths, setup.mano, setup.restored, setup.restored.model
  print(f'checkpoint: step {restored.step} of {restored.location.directory} ({restored.location.description})')
  print(f'MANO: {os.path.abspath(setup.mano_dir)} ({setup.mano_source})')
  predictor = Predictor(model, restored.variables, mano, min(args.batch_size, len(paths)), restored.input_size_px)
  print(
      f'compiled the network for batches of {predictor.batch_size} in {predictor.compile_s:.1f} s '
      f'(persistent compilation cache: {setup.cache_dir or "off"})'
  )
  faces = {side: np.asarray(mano[side].faces, np.int64) for side in SIDES}
  titles = stage_titles(model)
  crop_info = {
      'rule': f'--bbox at {HAND_BOX_FILL:.0%} fill' if args.bbox else 'whole image padded to a square',
      'network_input_px': predictor.input_px,
  }
  checkpoint_info = {'path': os.path.abspath(args.checkpoint), 'step': int(restored.step)}
  failures: list[str] = []
  progress = tqdm(total=len(paths), unit='image', disable=len(paths) == 1, file=sys.stderr)

  def fail(message: str) -> None:
    failures.append(message)
    tqdm.write(f'error: {message}', file=sys.stderr)

  def run_batch(batch: list[tuple[PreparedImage, str]]) -> None:
    for (item, name), stages in zip(batch, predictor([item.input_u8 for item, _ in batch])):
      folder = os.path.join(args.out, name)
      info = {
          'image': {'path': os.path.abspath(item.path), 'size_px': list(item.size_px)},
          'crop': dict(crop_info, box_px=_rounded(item.square.box_px)),
          'checkpoint': checkpoint_info,
          'stage': len(stages) - 1,
      }
      not_finite = sorted(key for key, value in stages[-1].items() if not np.all(np.isfinite(value)))
      if not_finite:
        fail(f"{item.path}: the network's outputs {not_finite} are not finite (NaN or inf); check the checkpoint")
        progress.update()
        continue
      try:
        write_outputs(folder, stages, item.render_u8, item.square, faces, titles, info, model.config.center_idx)
      except Exception as e:  # pylint: disable=broad-except  # one image's failure must not stop the others
        fail(f'{item.path}: cannot write its results to {folder} ({type(e).__name__}: {e})')
      progress.update()

  tic = time.perf_counter()
  batch: list[tuple[PreparedImage, str]] = []
  for path, name in zip(paths, output_names(paths)):
    try:
      batch.append((prepare_image(path, args.bbox, predictor.input_px, args.render_size), name))
    except ImageInputError as e:
      fail(str(e))
      progress.update()
    if len(batch) == predictor.batch_size:
      run_batch(batch)
      batch = []
  if batch:
    run_batch(batch)
  total_s = time.perf_counter() - tic
  progress.close()

  succeeded = len(paths) - len(failures)
  if predictor.images:
    print(
        f'network: {predictor.images} images in {predictor.network_s:.2f} s = '
        f'{predictor.images / predictor.network_s:.1f} images/s (batch {predictor.batch_size}, '
        f'{jax.devices()[0].platform}); compilation {predictor.compile_s:.1f} s, not included'
    )
    print(
        f'end to end: {succeeded} images in {total_s:.1f} s = {succeeded / total_s:.2f} images/s '
        '(reading, cropping, network, rendering, writing)'
    )
  print(f'{succeeded} of {len(paths)} images succeeded, {len(failures)} failed; results in {args.out}')
  for message in failures:
    print(f'  failed: {message}', file=sys.stderr)
  return 1 if failures else 0


if __name__ == '__main__':
  cli.run(main)
