"""A small synthetic InterHand2.6M: the raw file layout, rendered two-hand images, broken entries.

    python -m data_prep.synthetic --out RAW --num_train 8 --num_test 4 [--num_val 0] --seed 0 \\
        [--rig capture|frontal] [--mano_dir DIR] [--scene interacting|demo] \\
        [--hand_separation_cm 4,8] [--gloves] [--captures_per_split 2]

writes, as the real dataset lays it out (see `data_prep.interhand26m.raw`):

    RAW/images/<split>/Capture<c>/<seq_name>/cam<camera>/image<frame>.jpg   334x512 or 512x334 JPEG
    RAW/annotations/<split>/InterHand2.6M_<split>_{data,camera,joint_3d,MANO_NeuralAnnot}.json
    RAW/mano/MANO_{LEFT,RIGHT}.pkl

MANO: by default the synthetic pair of `data_prep.synthetic_mano.write_all(RAW/mano, seed)` (official
pickle layout, plus .npz copies and a preview picture; its rest wrist lies ~9.6 cm from the origin,
as the real model's does). The real models come from https://mano.is.tue.mpg.de; `--mano_dir`
copies MANO_{LEFT,RIGHT}.pkl (or .npz) from a folder instead, and the hands are posed with them.

Content of a split: two captures (`--captures_per_split`), each with four cameras listed in
camera.json and one unlisted camera, all 1.0-1.3 m from the hands and aimed at them (within ~1 cm),
focal ~1200 px, principal point within 6 px of the image centre, roll within 17 degrees. The rig
(`--rig`) places them:

  capture (default; closer to the real capture): the listed cameras surround the hands, azimuths
    a quarter turn apart from a random start (each +-17 degrees), elevations uniform in -30..60
    degrees; views 0-2 (and the unlisted camera) portrait 334x512, view 3 landscape 512x334; view 1
    is a grey camera whose JPEGs are single-channel (PIL mode 'L'), as InterHand2.6M's monochrome
    cameras are. Backgrounds are a dark studio: near-black with dim smooth glows and sensor noise
    (mean intensity ~7 of 255 before exposure, 90 % of them below 12).
  frontal (the demo's): the cameras look at the hands from within 40 degrees of one direction
    (world -z); views 0-2 landscape 512x334, view 3 portrait; all colour; bright backgrounds of
    smooth colour noise, a gradient and fine texture (mean intensity ~130).

Each frame poses two MANO hands (root orientation within about 25 degrees per axis of a fixed one,
pose relative to the mean pose, shape) whose centroids lie 4-8 cm apart (`--hand_separation_cm`), so
they interact and overlap in most views; they are rendered with flat Lambertian shading in skin
tones (or, `--gloves`, left green and right red), lit from the camera's side in every view, over the
rig's backgrounds. Every view the builder must keep has a mean intensity of at least 12 (a darker
one is brightened by a gain, an exposure: about one capture view in eight) and so passes its
image_dark check (mean >= 10 after decoding, checked when writing). The hands lie in
front of every camera, near the image centre (a fingertip occasionally crosses a portrait image's
border). Frame numbers step by 6, as in the 5 fps subset. data.json images carry
id, file_name, width, height, capture, subject, seq_name, camera, frame_idx; annotations carry id
(= image_id), image_id, bbox (of the projected joints), joint_valid, hand_type, hand_type_valid.

Scenes (`--scene`): 'interacting' (the default, as above) or 'demo' (`make demo`'s: hands 10-16 cm
apart in gloves, 8 captures per split, an easier scene whose hands a small network learns to locate
in a few CPU minutes); --hand_separation_cm, --gloves and --captures_per_split change one field of it.

Counts: `--num_<split> N` is the number of annotations the builder keeps (valid interacting views,
the four listed cameras of each frame, frames going round the captures). Every split
with N > 0 adds `len(BROKEN_ENTRIES)` = 9 annotations that it must skip, with these reasons
(`data_prep.interhand26m.preprocess`):

    not_interacting 2    a right-hand-only and a left-hand-only frame (the other hand's MANO null)
    hand_type_invalid 1  interacting, hand_type_valid 0
    mano_missing 1       interacting, left hand's MANO null
    mano_invalid 1       interacting, right hand's MANO trans has a NaN
    camera_missing 1     a view from the unlisted camera
    image_missing 1      no image file
    image_corrupt 1      the JPEG truncated to a quarter of its bytes
    image_dark 1         the image scaled to 3 % brightness (mean < 10)

so data.json holds N + 9 annotations. A split with N = 0 is not written at all. The output is a
function of the arguments only: JSON keys sorted, fixed JPEG quality, no timestamps. The frontal
rig writes the same bytes as the generator did before the capture rig existed (for the same MANO).
"""

import dataclasses
import io
import json
import math
import os
import shutil
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image

from data_prep import synthetic_mano
from data_prep.interhand26m import preprocess
from data_prep.interhand26m import raw
from dir_jax import cli
from dir_jax.data import image_io
from dir_jax.data import schema
from dir_jax.mano import ManoAsset, ManoPair, gt_mano, load_mano_pair, rotation
from dir_jax.mano.asset import find_mano_file
from dir_jax.render import render_shaded

SPLIT_INDEX = {'train': 0, 'val': 1, 'test': 2}
LANDSCAPE_WH = (512, 334)  # InterHand2.6M's image size (width, height); some cameras are portrait
VIEWS_PER_FRAME = 4  # listed cameras per capture
RIGS = ('capture', 'frontal')
FRAME_STEP = 6  # 30 fps frame numbers, kept every 6th (the 5 fps subset)
JPEG_QUALITY = 90
DARK_FACTOR = 0.03
HAND_SEPARATION_M = (0.04, 0.08)  # distance between the two hands' vertex centroids (the default Scene's)
MAX_CAPTURES_PER_SPLIT = 10  # capture ids are 10 * split index + k
GLOVE_RGB = {'left': np.array([0.3, 0.85, 0.35]), 'right': np.array([0.9, 0.3, 0.3])}  # Scene.gloves
CAMERA_DISTANCE_M = (1.0, 1.3)
# The rig: cameras within CAMERA_CONE_RAD of the world -z direction from the hands, and hand roots
# turned from ROOT_BASE_AXIS_ANGLE by a random rotation of ROOT_JITTER_RAD per axis-angle component,
# so every camera sees hands of a similar range of orientations (train and test captures alike).
CAMERA_CONE_RAD = 0.7
# The 'capture' rig: the listed cameras' azimuths (about the vertical, world -y) a quarter turn apart
# from a random start, each jittered by up to CAPTURE_AZIMUTH_JITTER_RAD, so they surround the hands;
# elevations uniform in CAPTURE_ELEVATION_RAD (from below the hands to well above them). The unlisted
# camera anywhere on that band. Views 0, 1, 2 and the unlisted camera are portrait, view 3 landscape
# (InterHand2.6M's cameras are mostly portrait); view CAPTURE_GREY_VIEW is a monochrome camera.
CAPTURE_AZIMUTH_JITTER_RAD = 0.3
CAPTURE_ELEVATION_RAD = (math.radians(-30.0), math.radians(60.0))
CAPTURE_LANDSCAPE_VIEWS = (3,)
CAPTURE_GREY_VIEW = 1
# Studio backgrounds ('capture' rig): near-black, with dim smooth glows (lights, the rig) whose
# brightest point is STUDIO_PEAK (uniform) above black, and sensor noise of STUDIO_NOISE std.
STUDIO_PEAK = (6.0, 48.0)
STUDIO_NOISE = 1.5
# Exposure: a view whose mean intensity is below EXPOSURE_TARGET_MEAN is brightened (a gain, as a
# longer exposure would) to that mean, so that after JPEG coding it stays above
# preprocess.MIN_MEAN_INTENSITY (10); only the planted dark entry is then darkened below it.
EXPOSURE_TARGET_MEAN = 12.0
ROOT_BASE_AXIS_ANGLE = np.array([-np.pi / 2, 0.0, 0.0])
ROOT_JITTER_RAD = 0.4
FOCAL_PX = (1150.0, 1250.0)
PRINCIPAL_JITTER_PX = 6.0
# Standard deviation of each pose PCA coefficient (row 0 of the synthetic basis flexes every joint).
PCA_STD = np.concatenate([[1.5, 0.6], 0.3 * np.exp(-np.arange(43) / 6.0)])
BETAS_STD = 0.7
# Annotation fates of the broken entries of each split, and the skip reason each should produce in
# the builder's 'interacting' config; the 'all' config keeps the ALL_CONFIG_KEEPS entries.
BROKEN_ENTRIES = (
    ('right_only', preprocess.NOT_INTERACTING),
    ('left_only', preprocess.NOT_INTERACTING),
    ('hand_type_invalid', preprocess.HAND_TYPE_INVALID),
    ('mano_null', preprocess.MANO_MISSING),
    ('mano_nan', preprocess.MANO_INVALID),
    ('unlisted_camera', preprocess.CAMERA_MISSING),
    ('missing_file', preprocess.IMAGE_MISSING),
    ('truncated', preprocess.IMAGE_CORRUPT),
    ('dark', preprocess.IMAGE_DARK),
)
ALL_CONFIG_KEEPS = ('right_only', 'left_only', 'hand_type_invalid')
_MOTIONS = ('touchROM', 'pray', 'interlock', 'clap', 'fingertip_touch')


@dataclasses.dataclass(frozen=True)
class Scene:
  """What a split's frames show besides the rig: how far apart the hands are, their colours, and how
  many captures (each with its own cameras) the frames go round.

  The defaults are the interacting hands described in the module docstring. The demo's scene
  (`SCENES['demo']`) is an easier one that a small network learns to locate in a few CPU minutes.

  Attributes:
    hand_separation_m: (min, max) distance between the hands' vertex centroids, metres, uniform.
    gloves: the left hand green and the right one red (GLOVE_RGB) instead of random skin tones.
    captures_per_split: captures of each split (1..MAX_CAPTURES_PER_SPLIT); each has
      VIEWS_PER_FRAME listed cameras, so this sets how many viewpoints a split holds.
  """

  hand_separation_m: tuple[float, float] = HAND_SEPARATION_M
  gloves: bool = False
  captures_per_split: int = 2

  def __post_init__(self):
    low, high = self.hand_separation_m
    if not 0.0 < low <= high:
      raise ValueError(f'hand separation {self.hand_separation_m} m: expected 0 < min <= max')
    if not 1 <= self.captures_per_split <= MAX_CAPTURES_PER_SPLIT:
      raise ValueError(f'captures_per_split {self.captures_per_split}: expected 1..{MAX_CAPTURES_PER_SPLIT}')


# Named scenes (`--scene`): the default, and the demo's (`make demo`): hands 10-16 cm apart in gloves
# of two colours, seen from the cameras of 8 captures per split.
SCENES = {
    'interacting': Scene(),
    'demo': Scene(hand_separation_m=(0.10, 0.16), gloves=True, captures_per_split=8),
}


@dataclasses.dataclass(frozen=True)
class Camera:
  """One camera of a capture.

  Attributes:
    camera_id: e.g. '400012'.
    campos_m: (3,) centre in the world frame, metres.
    rotation: (3, 3) world -> camera (OpenCV axes).
    focal_px: (2,) fx, fy.
    princpt_px: (2,) principal point in OpenCV's convention (pixel centres at integers).
    width, height: image size in pixels.
    grey: a monochrome camera: its JPEGs are single-channel (PIL mode 'L').
  """

  camera_id: str
  campos_m: np.ndarray
  rotation: np.ndarray
  focal_px: np.ndarray
  princpt_px: np.ndarray
  width: int
  height: int
  grey: bool = False

  def to_camera_m(self, points_world_m: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> camera frame, metres."""
    return (np.asarray(points_world_m, np.float64) - self.campos_m) @ self.rotation.T

  def K_render(self) -> np.ndarray:  # pylint: disable=invalid-name
    """(3, 3) intrinsics in the rasterizer's convention (principal point + 0.5)."""
    return np.array(
        [
            [self.focal_px[0], 0.0, self.princpt_px[0] + 0.5],
            [0.0, self.focal_px[1], self.princpt_px[1] + 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


@dataclasses.dataclass
class Frame:
  """One captured instant: the hands in the scene and what NeuralAnnot says of them.

  Attributes:
    capture, frame_idx, seq_name: identifiers.
    meshes: {side: (verts (778, 3), joints (21, 3))} world metres, of the hands in the scene.
    mano_json: {'left': entry or None, 'right': entry or None} as written to MANO_NeuralAnnot.json;
      an entry is `{'pose': [48], 'shape': [10], 'trans': [3]}` (float32-representable values) and
      poses its hand's mesh unless the frame is made broken on purpose.
    light_dir_cam: (3,) direction towards the light, the same in every view's camera frame.
    skin_rgb: {side: (3,) colour in [0, 1]}.
  """

  capture: int
  frame_idx: int
  seq_name: str
  meshes: dict[str, tuple[np.ndarray, np.ndarray]]
  mano_json: dict[str, Any]
  light_dir_cam: np.ndarray
  skin_rgb: dict[str, np.ndarray]


def _f32_list(values: np.ndarray) -> list[float]:
  """Values rounded to float32, as Python floats (what the JSON files hold)."""
  return [float(v) for v in np.asarray(values, np.float32).reshape(-1)]


def look_at_rotation(campos_m: np.ndarray, target_m: np.ndarray, roll_rad: float) -> np.ndarray:
  """(3, 3) world -> camera rotation of a camera at `campos_m` whose optical axis hits `target_m`.

  Rows are the camera's x (right), y (down), z (forward) axes in world coordinates; `roll_rad`
  turns the image about the optical axis.
  """
  forward = np.asarray(target_m, np.float64) - np.asarray(campos_m, np.float64)
  forward /= np.linalg.norm(forward)
  helper = np.array([0.0, 1.0, 0.0]) if abs(forward[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
  right = np.cross(helper, forward)
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  cos, sin = math.cos(roll_rad), math.sin(roll_rad)
  return np.stack([cos * right + sin * down, -sin * right + cos * down, forward])


def _frontal_direction(rng: np.random.Generator, j: int) -> tuple[np.ndarray, tuple[int, int], bool]:
  """'frontal' rig, view j: (unit direction hands -> camera, (width, height), grey)."""
  tilt, azimuth = CAMERA_CONE_RAD * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * math.pi)
  direction = np.array([math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), -math.cos(tilt)])
  return direction, LANDSCAPE_WH[::-1] if j == VIEWS_PER_FRAME - 1 else LANDSCAPE_WH, False


def capture_direction(azimuth_rad: float, elevation_rad: float) -> np.ndarray:
  """(3,) unit direction from the hands to a camera of the 'capture' rig.

  Azimuth 0, elevation 0 is the frontal rig's axis (world -z); the vertical is world -y (the frontal
  cameras' image up); positive elevations look down on the hands.
  """
  cos_el = math.cos(elevation_rad)
  return np.array([cos_el * math.sin(azimuth_rad), -math.sin(elevation_rad), -cos_el * math.cos(azimuth_rad)])


def make_cameras(rng: np.random.Generator, capture: int, center_m: np.ndarray, rig: str = 'capture') -> list[Camera]:
  """The capture's VIEWS_PER_FRAME listed cameras and one unlisted camera (the last), of `rig`.

  'capture': around the hands (see CAPTURE_AZIMUTH_JITTER_RAD), three of the listed cameras and the
  unlisted one portrait, listed view CAPTURE_GREY_VIEW grey. 'frontal': within CAMERA_CONE_RAD of
  world -z, listed view 3 portrait, the others landscape, none grey.
  """
  if rig not in RIGS:
    raise ValueError(f'unknown rig {rig!r}; expected one of {RIGS}')
  start_rad = rng.uniform(0.0, 2.0 * math.pi) if rig == 'capture' else 0.0
  cameras = []
  for j in range(VIEWS_PER_FRAME + 1):
    if rig == 'frontal':
      direction, (width, height), grey = _frontal_direction(rng, j)
    else:
      listed = j < VIEWS_PER_FRAME
      azimuth = (
          start_rad + 0.5 * math.pi * j + rng.uniform(-CAPTURE_AZIMUTH_JITTER_RAD, CAPTURE_AZIMUTH_JITTER_RAD)
          if listed
          else rng.uniform(0.0, 2.0 * math.pi)
      )
      direction = capture_direction(azimuth, rng.uniform(*CAPTURE_ELEVATION_RAD))
      width, height = LANDSCAPE_WH if j in CAPTURE_LANDSCAPE_VIEWS else LANDSCAPE_WH[::-1]
      grey = j == CAPTURE_GREY_VIEW
    campos_m = center_m + rng.uniform(*CAMERA_DISTANCE_M) * direction
    target_m = center_m + rng.normal(0.0, 0.01, 3)
    focal = rng.uniform(*FOCAL_PX)
    cameras.append(
        Camera(
            camera_id=str(400002 + 100 * capture + 10 * j),
            campos_m=campos_m,
            rotation=look_at_rotation(campos_m, target_m, rng.uniform(-0.3, 0.3)),
            focal_px=np.array([focal, focal * rng.uniform(0.998, 1.002)]),
            princpt_px=(np.array([width / 2, height / 2]) + rng.uniform(-PRINCIPAL_JITTER_PX, PRINCIPAL_JITTER_PX, 2)),
            width=width,
            height=height,
            grey=grey,
        )
    )
  return cameras


def _quaternion(axis_angle: np.ndarray) -> np.ndarray:
  """(4,) unit quaternion (w, x, y, z) of an axis-angle."""
  angle = np.linalg.norm(axis_angle)
  axis = axis_angle / angle if angle > 0 else np.zeros(3)
  return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


def _random_root_axis_angle(rng: np.random.Generator) -> np.ndarray:
  """(3,) axis-angle of ROOT_BASE_AXIS_ANGLE followed by a random turn of ROOT_JITTER_RAD."""
  (w1, *v1), (w2, *v2) = _quaternion(rng.normal(0.0, ROOT_JITTER_RAD, 3)), _quaternion(ROOT_BASE_AXIS_ANGLE)
  v1, v2 = np.asarray(v1), np.asarray(v2)
  w, v = w1 * w2 - v1 @ v2, w1 * v2 + w2 * v1 + np.cross(v1, v2)
  v *= np.sign(w) if w != 0 else 1.0
  sin_half = np.linalg.norm(v)
  return 2.0 * math.atan2(sin_half, abs(w)) * v / max(sin_half, 1e-12)


_gt_mano_aa = jax.jit(gt_mano, static_argnames=('pose_is_pca', 'center_idx'))


def hand_mesh_world(asset: ManoAsset, hand: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
  """Vertices (778, 3) and joints (21, 3), world metres, of a NeuralAnnot entry.

  The full hand pose is `pose[3:] + hands_mean` (axis-angle), posed by the ground-truth layer.
  """
  pose = jnp.asarray(hand['pose'], jnp.float32)
  root = rotation.axis_angle_to_matrix(pose[:3])
  verts, joints = _gt_mano_aa(
      asset,
      root[None],
      (pose[3:] + asset.hands_mean)[None],
      jnp.asarray(hand['shape'], jnp.float32)[None],
      jnp.asarray(hand['trans'], jnp.float32)[None],
      pose_is_pca=False,
  )
  return np.asarray(verts[0], np.float64), np.asarray(joints[0], np.float64)


def sample_hand(rng: np.random.Generator, asset: ManoAsset, centroid_m: np.ndarray) -> dict[str, list[float]]:
  """A NeuralAnnot entry (world frame) of a random hand whose vertex centroid is `centroid_m`."""
  coefficients = rng.normal(size=45) * PCA_STD
  pose_rel = coefficients @ np.asarray(asset.hands_components, np.float64)  # relative to the mean
  hand = {
      'pose': _f32_list(np.concatenate([_random_root_axis_angle(rng), pose_rel])),
      'shape': _f32_list(rng.normal(0.0, BETAS_STD, 10)),
      'trans': [0.0, 0.0, 0.0],
  }
  verts, _ = hand_mesh_world(asset, hand)
  hand['trans'] = _f32_list(centroid_m - verts.mean(axis=0))
  return hand


def make_frame(
    rng: np.random.Generator,
    pair: ManoPair,
    capture: int,
    frame_idx: int,
    seq_name: str,
    center_m: np.ndarray,
    sides: tuple[str, ...] = ('left', 'right'),
    scene: Scene = Scene(),
) -> Frame:
  """A frame with random hands of `sides` near `center_m`, as `scene` sets them apart and colours them;
  its MANO entries are the hands' own."""
  offset = rng.normal(size=3)
  offset *= rng.uniform(*scene.hand_separation_m) / 2.0 / np.linalg.norm(offset)
  middle = center_m + rng.normal(0.0, 0.02, 3)
  hands, meshes = {}, {}
  for side, sign in (('right', 1.0), ('left', -1.0)):
    if side in sides:
      hands[side] = sample_hand(rng, pair[side], middle + sign * offset if len(sides) == 2 else middle)
      meshes[side] = hand_mesh_world(pair[side], hands[side])
  light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), -1.0])
  skin = {side: rng.uniform([0.72, 0.52, 0.42], [0.95, 0.8, 0.7]) for side in ('left', 'right')}
  if scene.gloves:
    skin = {side: GLOVE_RGB[side].copy() for side in skin}
  mano_json = {side: hands.get(side) for side in ('left', 'right')}
  return Frame(capture, frame_idx, seq_name, meshes, mano_json, light, skin)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
  """(height, width, 3) uint8, the 'frontal' rig's: smooth colour noise, a brightness gradient and
  fine texture (mean intensity about 130)."""
  coarse = Image.fromarray(rng.uniform(30, 230, (4, 6, 3)).astype(np.uint8))
  fine = Image.fromarray(rng.uniform(0, 255, (height // 8, width // 8)).astype(np.uint8))
  coarse = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float64)
  coarse = 0.5 * coarse + 0.5 * coarse.mean(axis=-1, keepdims=True)  # halve the saturation
  fine = np.asarray(fine.resize((width, height), Image.Resampling.BILINEAR), np.float64) - 127.5
  angle = rng.uniform(0.0, 2.0 * np.pi)
  yy, xx = np.mgrid[0:height, 0:width]
  ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * rng.uniform(-60, 60)
  return np.clip(coarse + ramp[..., None] + 0.12 * fine[..., None], 0, 255).astype(np.uint8)


def studio_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
  """(height, width, 3) uint8, the 'capture' rig's: a dark studio, mostly near-black.

  A smooth grey field (cubed uniform noise, so a few dim glows over black) scaled to a peak of
  STUDIO_PEAK, tinted a little per channel, plus sensor noise.
  """
  coarse = Image.fromarray(np.round(255.0 * rng.uniform(0.0, 1.0, (4, 6)) ** 3).astype(np.uint8))
  glow = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float64) / 255.0
  tint = rng.uniform(0.85, 1.15, 3)
  noise = rng.normal(0.0, STUDIO_NOISE, (height, width, 1))
  return np.clip(np.round(rng.uniform(*STUDIO_PEAK) * glow[..., None] * tint + noise), 0, 255).astype(np.uint8)


def render_view(
    rng: np.random.Generator, frame: Frame, camera: Camera, pair: ManoPair, rig: str = 'capture'
) -> np.ndarray:
  """(height, width, 3) uint8: the frame's hands, shaded, over a random background of `rig`."""
  image = (studio_background if rig == 'capture' else background)(rng, camera.width, camera.height)
  meshes = [
      (camera.to_camera_m(frame.meshes[side][0]), pair[side].faces, frame.skin_rgb[side]) for side in frame.meshes
  ]
  rgb, mask = render_shaded(meshes, camera.K_render(), camera.height, camera.width, light_dir_cam=frame.light_dir_cam)
  image[mask] = np.clip(np.round(rgb[mask] * 255.0), 0, 255).astype(np.uint8)
  return image


def _projected_bbox(frame: Frame, camera: Camera) -> list[float]:
  """[x, y, w, h] (OpenCV pixels) of the projected joints of the frame's hands."""
  joints_cam = camera.to_camera_m(np.concatenate([frame.meshes[s][1] for s in frame.meshes]))
  xy = joints_cam[:, :2] / joints_cam[:, 2:] * camera.focal_px + camera.princpt_px
  lo, hi = xy.min(axis=0), xy.max(axis=0)
  return _f32_list(np.concatenate([lo, hi - lo]))


def _hand_type(frame: Frame) -> str:
  return 'interacting' if len(frame.meshes) == 2 else next(iter(frame.meshes))


def _joint_3d_entry(frame: Frame) -> dict[str, Any]:
  """joint_3d.json entry: 42 joints (right, then left; InterHand2.6M order), millimetres."""
  world_mm, valid = [], []
  for side in ('right', 'left'):
    present = side in frame.meshes
    joints = frame.meshes[side][1][list(schema.INTERHAND_FROM_DIR)] * 1000.0 if present else np.zeros((21, 3))
    world_mm += [_f32_list(j) for j in joints]
    valid += [[present]] * 21
  return {'world_coord': world_mm, 'joint_valid': valid, 'hand_type': _hand_type(frame), 'hand_type_valid': True}


def _capture_camera_json(cameras: list[Camera]) -> dict[str, dict[str, Any]]:
  """camera.json entry of a capture (the listed cameras only)."""
  listed = cameras[:VIEWS_PER_FRAME]
  return {
      'campos': {c.camera_id: _f32_list(c.campos_m * 1000.0) for c in listed},
      'camrot': {c.camera_id: [_f32_list(row) for row in c.rotation] for c in listed},
      'focal': {c.camera_id: _f32_list(c.focal_px) for c in listed},
      'princpt': {c.camera_id: _f32_list(c.princpt_px) for c in listed},
  }


def _write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(obj, f, sort_keys=True)


def _plan_views(
    rng: np.random.Generator,
    pair: ManoPair,
    split: str,
    num_valid: int,
    rig: str = 'capture',
    scene: Scene = Scene(),
) -> tuple[list[tuple[Frame, Camera, int, str]], dict[int, list[Camera]]]:
  """The split's frames and views: `num_valid` good ones, then the BROKEN_ENTRIES.

  The good frames go round the scene's captures; the broken entries belong to the first capture.

  Returns:
    views: (frame, camera, hand_type_valid, fate) with fate in {'ok', 'missing_file', 'truncated',
      'dark'}, in data.json order; cameras: {capture: `make_cameras` output}.
  """
  captures = [MAX_CAPTURES_PER_SPLIT * SPLIT_INDEX[split] + k for k in range(scene.captures_per_split)]
  centers_m = {c: np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.05, 3) for c in captures}
  cameras = {c: make_cameras(rng, c, centers_m[c], rig) for c in captures}
  next_frame = {c: 100 + 6000 * k for k, c in enumerate(captures)}

  def new_frame(capture, seq_name, sides=('left', 'right')):
    frame = make_frame(rng, pair, capture, next_frame[capture], seq_name, centers_m[capture], sides, scene)
    next_frame[capture] += FRAME_STEP
    return frame

  views = []
  for f in range(math.ceil(num_valid / VIEWS_PER_FRAME)):
    capture = captures[f % len(captures)]
    frame = new_frame(capture, f'{capture:04d}_dh_{_MOTIONS[capture % len(_MOTIONS)]}')
    for camera in cameras[capture][: min(VIEWS_PER_FRAME, num_valid - f * VIEWS_PER_FRAME)]:
      views.append((frame, camera, 1, 'ok'))
  capture, listed = captures[0], cameras[captures[0]]
  broken_seq = f'{capture:04d}_dh_{_MOTIONS[-1]}'
  for k, side in enumerate(('right', 'left')):
    views.append((new_frame(capture, f'{capture:04d}_{side[0]}h_fist', (side,)), listed[k], 1, 'ok'))
  frame = new_frame(capture, broken_seq)
  views += [
      (frame, listed[0], 0, 'ok'),
      (frame, cameras[capture][VIEWS_PER_FRAME], 1, 'ok'),
      (frame, listed[1], 1, 'missing_file'),
      (frame, listed[2], 1, 'truncated'),
      (frame, listed[3], 1, 'dark'),
  ]
  frame = new_frame(capture, broken_seq)
  frame.mano_json['left'] = None
  views.append((frame, listed[1], 1, 'ok'))
  frame = new_frame(capture, broken_seq)
  frame.mano_json['right'] = dict(frame.mano_json['right'], trans=[math.nan, 0.0, 0.0])
  views.append((frame, listed[2], 1, 'ok'))
  return views, cameras


def expose(image_u8: np.ndarray) -> np.ndarray:
  """The image brightened by a gain to a mean of EXPOSURE_TARGET_MEAN if it is darker (else itself).

  The gain is raised until the clipped, rounded result reaches the target; an image with no
  light at all (all zero) cannot be exposed and raises ValueError.
  """
  image = np.asarray(image_u8, np.uint8)
  mean = float(image.mean())
  if mean >= EXPOSURE_TARGET_MEAN:
    return image
  if mean == 0.0:
    raise ValueError('an all-black view cannot be exposed')
  source, gain, exposed = image.astype(np.float64), EXPOSURE_TARGET_MEAN / mean, image
  for _ in range(32):
    exposed = np.clip(np.round(source * gain), 0, 255).astype(np.uint8)
    mean = float(exposed.mean())
    if mean >= EXPOSURE_TARGET_MEAN:
      return exposed
    gain *= max(EXPOSURE_TARGET_MEAN / max(mean, 1e-3), 1.01)
  raise ValueError(f'could not expose the view to mean {EXPOSURE_TARGET_MEAN} (reached {mean:.2f})')


def encode_view(image_rgb_u8: np.ndarray, camera: Camera) -> bytes:
  """JPEG bytes of a view: RGB, or single-channel (PIL mode 'L', ITU-R 601 luma) for a grey camera."""
  image = Image.fromarray(np.asarray(image_rgb_u8, np.uint8))
  if camera.grey:
    image = image.convert('L')
  return preprocess.encode_jpeg(np.asarray(image), quality=JPEG_QUALITY)


def _decoded_mean(encoded: bytes) -> float:
  """Mean intensity of a JPEG as the builder computes it (decoded, converted to RGB)."""
  with Image.open(io.BytesIO(encoded)) as decoded:
    return float(np.mean(image_io.to_rgb_u8(decoded)))


def write_split(
    out_dir: str, split: str, num_valid: int, pair: ManoPair, seed: int, rig: str = 'capture', scene: Scene = Scene()
) -> dict[str, Any]:
  """Writes one split's images and annotation files of `scene`, seen by the cameras of `rig` (see RIGS).

  Returns:
    {'annotations': total, 'kept': num_valid, 'skipped': {reason: count}}: what the builder's
    'interacting' config should find; 'all': {'kept', 'skipped'}, what its 'all' config should find.
  """
  rng = np.random.default_rng([seed, SPLIT_INDEX[split]])
  views, cameras = _plan_views(rng, pair, split, num_valid, rig, scene)
  image_root = os.path.join(out_dir, 'images', split)
  data = {'images': [], 'annotations': []}
  mano_json, joint_json = {}, {}
  for k, (frame, camera, hand_type_valid, fate) in enumerate(views):
    image_id = 100000 * SPLIT_INDEX[split] + k
    file_name = f'Capture{frame.capture}/{frame.seq_name}/cam{camera.camera_id}/image{frame.frame_idx}.jpg'
    data['images'].append(
        {
            'id': image_id,
            'file_name': file_name,
            'width': camera.width,
            'height': camera.height,
            'capture': frame.capture,
            'subject': frame.capture,
            'seq_name': frame.seq_name,
            'camera': camera.camera_id,
            'frame_idx': frame.frame_idx,
        }
    )
    data['annotations'].append(
        {
            'id': image_id,
            'image_id': image_id,
            'bbox': _projected_bbox(frame, camera),
            'joint_valid': [[int(side in frame.meshes)] for side in ('right', 'left') for _ in range(21)],
            'hand_type': _hand_type(frame),
            'hand_type_valid': hand_type_valid,
        }
    )
    mano_json.setdefault(str(frame.capture), {})[str(frame.frame_idx)] = frame.mano_json
    joint_json.setdefault(str(frame.capture), {})[str(frame.frame_idx)] = _joint_3d_entry(frame)
    image = expose(render_view(rng, frame, camera, pair, rig))
    if fate == 'missing_file':
      continue
    if fate == 'dark':
      image = np.round(image * DARK_FACTOR).astype(np.uint8)
    encoded = encode_view(image, camera)
    if (fate == 'dark') != (_decoded_mean(encoded) < preprocess.MIN_MEAN_INTENSITY):
      raise AssertionError(
          f'{split} image {image_id} ({fate}): mean intensity {_decoded_mean(encoded):.2f} '
          f'is on the wrong side of {preprocess.MIN_MEAN_INTENSITY}'
      )
    if fate == 'truncated':
      encoded = encoded[: len(encoded) // 4]
    path = os.path.join(image_root, file_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(encoded)

  _write_json(raw.annotation_path(out_dir, split, 'data'), data)
  _write_json(
      raw.annotation_path(out_dir, split, 'camera'), {str(c): _capture_camera_json(cams) for c, cams in cameras.items()}
  )
  _write_json(raw.annotation_path(out_dir, split, 'joint_3d'), joint_json)
  _write_json(raw.annotation_path(out_dir, split, 'MANO_NeuralAnnot'), mano_json)
  skipped = {reason: 0 for reason in preprocess.SKIP_REASONS}
  skipped_all = dict(skipped)
  for name, reason in BROKEN_ENTRIES:
    skipped[reason] += 1
    skipped_all[reason] += name not in ALL_CONFIG_KEEPS
  return {
      'annotations': len(views),
      'kept': num_valid,
      'skipped': skipped,
      'all': {'kept': num_valid + len(ALL_CONFIG_KEEPS), 'skipped': skipped_all},
  }


def write_annotations_at_scale(
    out_dir: str, split: str, num_images: int, num_captures: int = 70, cameras_per_frame: int = 40, seed: int = 0
) -> dict[str, int]:
  """Writes only a split's four annotation JSONs, shaped as the real ones, for `num_images` images.

  For measuring planning at the real dataset's size (train: 1,361,062 images, about 70 captures);
  no image is written. Frames go round the captures, each seen by `cameras_per_frame` cameras of
  its capture (all listed in camera.json, 512x334); hand types cycle interacting, interacting,
  right, left (the absent hand's MANO null); every value is random and float32-representable. The
  files are written entry by entry (the generator's memory does not grow with `num_images`).

  Returns:
    {'images': num_images, 'frames': frames written, 'interacting': images of interacting frames}.
  """
  rng = np.random.default_rng([seed, SPLIT_INDEX[split]])
  num_frames = math.ceil(num_images / cameras_per_frame)
  cameras = [str(400000 + k) for k in range(cameras_per_frame)]
  hand_types = ('interacting', 'interacting', 'right', 'left')
  paths = {kind: raw.annotation_path(out_dir, split, kind) for kind in raw.ANNOTATION_KINDS}
  os.makedirs(os.path.dirname(paths['data']), exist_ok=True)

  def frame_of(f):
    return f % num_captures, FRAME_STEP * (f // num_captures), hand_types[f % len(hand_types)]

  with open(paths['data'], 'w', encoding='utf-8') as out:
    for section in ('images', 'annotations'):
      out.write('{"images": [' if section == 'images' else '], "annotations": [')
      for k in range(num_images):
        capture, frame_idx, hand_type = frame_of(k // cameras_per_frame)
        camera = cameras[k % cameras_per_frame]
        seq_name = f'{capture:04d}_dh_{_MOTIONS[capture % len(_MOTIONS)]}'
        if section == 'images':
          entry = {
              'id': k,
              'file_name': f'Capture{capture}/{seq_name}/cam{camera}/image{frame_idx}.jpg',
              'width': LANDSCAPE_WH[0],
              'height': LANDSCAPE_WH[1],
              'capture': capture,
              'subject': capture,
              'seq_name': seq_name,
              'camera': camera,
              'frame_idx': frame_idx,
          }
        else:
          entry = {
              'id': k,
              'image_id': k,
              'bbox': _f32_list(rng.uniform(0, 300, 4)),
              'joint_valid': [[1]] * 42,
              'hand_type': hand_type,
              'hand_type_valid': 1,
          }
        out.write((', ' if k else '') + json.dumps(entry))
    out.write(']}')
  for kind in ('camera', 'MANO_NeuralAnnot', 'joint_3d'):
    with open(paths[kind], 'w', encoding='utf-8') as out:
      out.write('{')
      for capture in range(min(num_captures, num_frames)):
        if kind == 'camera':
          value = {
              'campos': {c: _f32_list(rng.uniform(-1000, 1000, 3)) for c in cameras},
              'camrot': {
                  c: [_f32_list(row) for row in look_at_rotation(rng.normal(size=3), np.zeros(3), 0.0)] for c in cameras
              },
              'focal': {c: _f32_list(rng.uniform(*FOCAL_PX, 2)) for c in cameras},
              'princpt': {c: _f32_list(rng.uniform(160, 260, 2)) for c in cameras},
          }
        else:
          value = {}
          for f in range(capture, num_frames, num_captures):
            _, frame_idx, hand_type = frame_of(f)
            present = ('right', 'left') if hand_type == 'interacting' else (hand_type,)
            if kind == 'joint_3d':
              value[str(frame_idx)] = {
                  'world_coord': [_f32_list(rng.normal(0, 100, 3)) for _ in range(42)],
                  'joint_valid': [[True]] * 42,
                  'hand_type': hand_type,
                  'hand_type_valid': True,
              }
            else:
              value[str(frame_idx)] = {
                  side: {
                      'pose': _f32_list(rng.normal(0, 0.3, 48)),
                      'shape': _f32_list(rng.normal(0, 1, 10)),
                      'trans': _f32_list(rng.normal(0, 0.1, 3)),
                  }
                  if side in present
                  else None
                  for side in ('left', 'right')
              }
        out.write((', ' if capture else '') + json.dumps(str(capture)) + ': ' + json.dumps(value))
      out.write('}')
  interacting = sum(
      min(cameras_per_frame, num_images - f * cameras_per_frame)
      for f in range(num_frames)
      if frame_of(f)[2] == 'interacting'
  )
  return {'images': num_images, 'frames': num_frames, 'interacting': interacting}


def write_mano(out_dir: str, seed: int, mano_dir: str | None = None) -> str:
  """Writes `out_dir/mano/MANO_{LEFT,RIGHT}.*` (synthetic, or copied from `mano_dir`); returns it."""
  folder = raw.mano_dir(out_dir)
  os.makedirs(folder, exist_ok=True)
  if mano_dir:
    for side in ('left', 'right'):
      source = find_mano_file(mano_dir, side)
      shutil.copyfile(source, os.path.join(folder, os.path.basename(source)))
  else:
    synthetic_mano.write_all(folder, seed)
  return folder


def generate(
    out_dir: str,
    num_train: int,
    num_test: int,
    num_val: int = 0,
    seed: int = 0,
    mano_dir: str | None = None,
    rig: str = 'capture',
    scene: Scene = Scene(),
) -> dict[str, dict[str, Any]]:
  """Writes the synthetic raw dataset (see the module docstring).

  Args:
    out_dir: output folder (created; existing files of the same names are overwritten).
    num_train, num_test, num_val: annotations per split the builder should keep; 0 = no split.
    seed: seeds everything random.
    mano_dir: folder with MANO_{LEFT,RIGHT} files to use instead of the synthetic pair.
    rig: 'capture' (cameras all around, mostly portrait, one grey, dark studio backgrounds) or
      'frontal' (cameras from one side, mostly landscape, bright backgrounds: the demo's).
    scene: the hands' separation and colours and the captures per split (`Scene`; the demo's is
      SCENES['demo']).

  Returns:
    {split: `write_split` summary} for the splits written.
  """
  if rig not in RIGS:
    raise ValueError(f'unknown rig {rig!r}; expected one of {RIGS}')
  pair = load_mano_pair(write_mano(out_dir, seed, mano_dir))
  counts = {'train': num_train, 'val': num_val, 'test': num_test}
  return {split: write_split(out_dir, split, n, pair, seed, rig, scene) for split, n in counts.items() if n > 0}


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string('out', None, 'output folder (the raw layout)', flag_values=FLAGS, required=True)
flags.DEFINE_integer('num_train', None, 'train annotations to keep', lower_bound=0, flag_values=FLAGS, required=True)
flags.DEFINE_integer('num_test', None, 'test annotations to keep', lower_bound=0, flag_values=FLAGS, required=True)
flags.DEFINE_integer('num_val', 0, 'val annotations to keep (0: no val split)', lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, 'seeds everything random', flag_values=FLAGS)
flags.DEFINE_string('mano_dir', None, 'MANO_{LEFT,RIGHT}.pkl to use (default: synthetic)', flag_values=FLAGS)
flags.DEFINE_enum(
    'rig',
    'capture',
    RIGS,
    "cameras and backgrounds: 'capture' (all around, dark studio) or " "'frontal' (the demo's)",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    'scene', 'interacting', SCENES, 'named scene (hands, colours, captures); the demo uses demo', flag_values=FLAGS
)
flags.DEFINE_list(
    'hand_separation_cm',
    None,
    "MIN,MAX distance between the hands' centroids, cm (default: the scene's)",
    flag_values=FLAGS,
)
flags.DEFINE_bool('gloves', None, "left hand green, right hand red (default: the scene's)", flag_values=FLAGS)
flags.DEFINE_integer(
    'captures_per_split',
    None,
    "captures (4 cameras each) per split (default: the scene's)",
    lower_bound=1,
    upper_bound=MAX_CAPTURES_PER_SPLIT,
    flag_values=FLAGS,
)


def _separation_cm(values: Sequence[str] | None) -> tuple[float, float] | None:
  """(min, max) cm of a --hand_separation_cm value, or None when it is not MIN,MAX with 0 < MIN <= MAX."""
  try:
    low, high = (float(v) for v in values)
  except (TypeError, ValueError):
    return None
  return (low, high) if 0.0 < low <= high else None


flags.register_validator(
    'hand_separation_cm',
    lambda values: values is None or _separation_cm(values) is not None,
    'expected MIN,MAX in cm with 0 < MIN <= MAX',
    flag_values=FLAGS,
)


def scene_from_flags() -> Scene:
  """The `Scene` of the parsed command line: --scene, with any of its fields set by their own flags."""
  changes = {}
  if FLAGS.hand_separation_cm is not None:
    changes['hand_separation_m'] = tuple(cm / 100.0 for cm in _separation_cm(FLAGS.hand_separation_cm))
  if FLAGS.gloves is not None:
    changes['gloves'] = FLAGS.gloves
  if FLAGS.captures_per_split is not None:
    changes['captures_per_split'] = FLAGS.captures_per_split
  return dataclasses.replace(SCENES[FLAGS.scene], **changes)


def main(argv: Sequence[str]) -> None:
  """Command line (argv[0]: the program); prints, per split, the annotations written and what the builder should
  keep."""
  cli.parse(FLAGS, argv, __doc__.split('\n\n')[0])
  summary = generate(
      FLAGS.out,
      FLAGS.num_train,
      FLAGS.num_test,
      FLAGS.num_val,
      FLAGS.seed,
      FLAGS.mano_dir,
      FLAGS.rig,
      scene_from_flags(),
  )
  for split, counts in summary.items():
    skipped = ', '.join(f'{r} {n}' for r, n in counts['skipped'].items() if n)
    print(f'{split}: {counts["annotations"]} annotations, {counts["kept"]} to keep; to skip: {skipped}')


if __name__ == '__main__':
  cli.run(main)
