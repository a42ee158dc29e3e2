"""The training augmentations of `augment` in JAX, for one example, `jax.vmap`'d over the batch.

`augment` runs the augmentations as TensorFlow ops on the host; this module runs the same ones on
the accelerator, so that they can sit inside the jit-compiled train step. It mirrors `augment` item by
item, with the same config fields (`config.data.augment`, `settings.augment_config()`), the same
distributions and the same maths (read `augment`'s module docstring for the geometry):
  `sample_geometry`     <- `augment.sample_geometry`: flip with `flip_prob`, theta ~ U(+-rotation_max_deg),
                           s ~ U(1 +- zoom_max_delta), t ~ U(+-translation_max_px)^2, each behind its switch;
  `image_affine`        <- `augment.image_affine`: the warp p' = L p + T, L = s R2(theta) F2;
  `apply_geometry`      <- `augment.apply_geometry`: image bilinear, seg nearest (labels swapped under a
                           flip), dense per `dense_interpolation`, black border; intrinsics
                           K' = [L K2 (R2 F2)^T | L k + T]; MANO hands mirrored to the other side
                           (`augment._mirror_hand`, PCA mapping of `augment.mano_constants`) and
                           rotated about the optical axis (`augment._rotate_hand`);
  `motion_blur_kernel`  <- `augment.motion_blur_kernel`, the same antialiased line;
  `sample_motion_blur`, `motion_blur` <- `augment.motion_blur`: probability `motion_blur_prob`, integer
                           length U{min..max} px, angle U(+-motion_blur_max_angle_deg), reflected border;
  `sample_color`, `apply_color` <- `augment.color_augment`: gain U(1 +- d) per channel, one offset
                           U(+-o), noise N(0, sigma^2) per pixel and channel (0..255 scale);
  `to_uint8`            <- `augment.to_uint8`: rounded (half to even) and clipped.
The order is `augment.augment`'s: blur, then the one warp, then colour, then uint8.

Resampling follows TensorFlow's `ImageProjectiveTransformV3` (which `augment` calls) exactly: output
pixel index (i, j) = (column, row) reads input index coordinates L^-1 ((i, j) + 0.5 - T) - 0.5; bilinear weights
(x1 - x, x - x0) with every out-of-image neighbour read as 0; nearest rounds half away from zero.

At the network's input side. `augment_batch(output_size=S)` with S smaller than the image (the demo's
64x64 network on 256x256 images) first resizes the image to S as `inference.model_input` would have
after the augmentation (linear, antialiased), then augments it there: the warp on the S grid with
the frame's translation scaled by S / 256, the blur line scaled likewise, the colour noise's standard
deviation scaled by what the resize leaves of white noise (`resized_noise_std`, 0.16 for 256 -> 64),
rounding to uint8 at S. The intrinsics and MANO updates are those of the frame, unchanged. The
operations commute with the resize up to resampling (the noise is white on the S grid instead of
low-passed), and the cost follows the pixels the network sees (1/16 of them for the demo). With S the
image's side (the released model) nothing is resized and the augmentation is the one above.

Random keys. Example `index` of the batch at train step `step` is augmented with
    example_key = fold_in(fold_in(key, step), index)
(`example_key`), `key` being the run's augmentation key: a function of (seed, step, index) only, so a
resumed run is bit-exact, and an example does not depend on the batch it is in. The random streams
are JAX's (threefry), not TensorFlow's (Philox): a seed gives other (equally distributed) augmentations
than on the host.

Switches that are off (config fields are static Python values) are skipped at trace time, so a disabled
augmentation costs nothing and leaves its targets bit-identical; they still consume their keys, so
turning one off does not change the others' draws. Under `vmap` the blur is computed for every example
and selected where drawn (a sum of (max size | 1)^2 = 81 shifted copies by default).

The MANO constants are `augment.mano_constants(pair)`: close over them (numpy arrays become constants
of the compiled step) or pass `DeviceManoConstants.from_host(...)`, a pytree, as a jit argument. This
module imports no TensorFlow (so the train step can import it); `mano_feature` repeats `augment`'s.
Small matrix products are written out term by term (`_matmul`): float32 on every backend (never TF32
or bf16), and an example's result has the same bits in a batch of any size (tested on the CPU).
"""

import functools
import math
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import ml_collections

from dir_jax.data import schema

_OTHER_SIDE = {'left': 'right', 'right': 'left'}
INTERPOLATIONS = ('nearest', 'bilinear')


def _matmul(left: jax.Array, right: jax.Array) -> jax.Array:
  """(M, K) @ (K, N) -> (M, N) float32, summed term by term in the order k = 0, 1, ...

  Small products are written out instead of calling `dot`: exact float32 on every backend (no TF32 or
  bf16 passes), and the same bits for a batch of any size under `vmap` (a batched `dot` on the CPU
  may sum in another order, which changes the last bit).
  """
  return functools.reduce(jnp.add, [left[:, k, None] * right[None, k, :] for k in range(left.shape[1])])


def _matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
  """(M, K) @ (K,) -> (M,), as `_matmul`."""
  return _matmul(matrix, vector[:, None])[:, 0]


def mano_feature(side: str, key: str) -> str:
  """Flat example key of one MANO parameter, e.g. `mano_left_betas` (as `augment.mano_feature`)."""
  return f'mano_{side}_{key}'


# Per example, what the augmentations read and write; other batch keys pass through.
_MANO_FEATURES = tuple(mano_feature(side, key) for side in schema.SIDES for key in schema.MANO_KEYS)
AUGMENTED_KEYS = ('image', 'seg', 'dense', 'intrinsics') + _MANO_FEATURES


@chex.dataclass(frozen=True)
class DeviceManoConstants:
  """`augment.ManoConstants` as a pytree of jnp float32 arrays keyed by side (a valid jit argument).

  Attributes:
    wrist_template_m: {side: (3,)} metres, rest wrist of the mean shape.
    wrist_shapedirs_m: {side: (3, 10)} metres per beta.
    mirror_pose_matrix: {source side: (45, 45)}: other side's PCA = pca @ matrix + offset.
    mirror_pose_offset: {source side: (45,)}.
  """

  wrist_template_m: dict[str, jax.Array]
  wrist_shapedirs_m: dict[str, jax.Array]
  mirror_pose_matrix: dict[str, jax.Array]
  mirror_pose_offset: dict[str, jax.Array]

  @classmethod
  def from_host(cls, constants: Any) -> 'DeviceManoConstants':
    """From `augment.mano_constants(pair)` (an `augment.ManoConstants`)."""
    fields = ('wrist_template_m', 'wrist_shapedirs_m', 'mirror_pose_matrix', 'mirror_pose_offset')
    return cls(
        **{
            name: {side: jnp.asarray(value, jnp.float32) for side, value in getattr(constants, name).items()}
            for name in fields
        }
    )


def _rest_wrist(constants: Any, side: str, betas: jax.Array) -> jax.Array:
  """(3,) metres: J0 of `side` shaped by `betas` (10,)."""
  return jnp.asarray(constants.wrist_template_m[side]) + _matvec(jnp.asarray(constants.wrist_shapedirs_m[side]), betas)


# Folded into the run's seed for the augmentation key, so that it shares no draws with initialisation.
_AUGMENT_KEY_TAG = 0x61756720  # b'aug '


def run_key(seed: int) -> jax.Array:
  """The run's augmentation key: the seed's key with a tag of its own (`augment_batch`'s `key`)."""
  return jax.random.fold_in(jax.random.key(seed), _AUGMENT_KEY_TAG)


def example_key(key: jax.Array, step: jax.Array | int, index: jax.Array | int) -> jax.Array:
  """The key of example `index` at train step `step`: fold_in(fold_in(key, step), index)."""
  return jax.random.fold_in(jax.random.fold_in(key, step), index)


# ----------------------------------------------------------------------------------------------------------
# Sampling: one example's parameters from one key.


def sample_geometry(key: jax.Array, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Random geometric augmentation (`augment.sample_geometry`).

  Args:
    key: one example's geometry key.
    config: `settings.augment_config()`.

  Returns:
    `flip` () bool, `angle_rad` () float32, `zoom` () float32 (s), `translation_px` (2,) float32.
  """
  u = jax.random.uniform(key, (5,), jnp.float32)
  symmetric = 2.0 * u - 1.0
  flip = u[0] < config.flip_prob if config.flip else jnp.array(False)
  angle = symmetric[1] * math.radians(config.rotation_max_deg) if config.rotate else jnp.array(0.0, jnp.float32)
  zoom = 1.0 + symmetric[2] * config.zoom_max_delta if config.zoom else jnp.array(1.0, jnp.float32)
  translation = symmetric[3:] * config.translation_max_px if config.translate else jnp.zeros([2], jnp.float32)
  return {'flip': flip, 'angle_rad': angle, 'zoom': zoom, 'translation_px': translation}


def sample_motion_blur(key: jax.Array, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Random motion blur (`augment.augment`'s choice and `augment.motion_blur`'s draws).

  Returns:
    `apply` () bool (probability `motion_blur_prob`; False when `motion_blur` is off), `size_px` ()
    int32 uniform in [`motion_blur_min_size_px`, `motion_blur_max_size_px`], `angle_rad` () float32
    uniform in +-`motion_blur_max_angle_deg`.
  """
  choice_key, size_key, angle_key = jax.random.split(key, 3)
  apply = jax.random.uniform(choice_key, (), jnp.float32) < config.motion_blur_prob
  size_px = jax.random.randint(
      size_key, (), config.motion_blur_min_size_px, config.motion_blur_max_size_px + 1, jnp.int32
  )
  max_angle = math.radians(config.motion_blur_max_angle_deg)
  angle = jax.random.uniform(angle_key, (), jnp.float32, -max_angle, max_angle)
  return {'apply': apply & bool(config.motion_blur), 'size_px': size_px, 'angle_rad': angle}


def sample_color(
    key: jax.Array, image_shape: tuple[int, ...], config: ml_collections.ConfigDict
) -> dict[str, jax.Array]:
  """Random colour change (`augment.color_augment`'s draws), on the 0..255 scale.

  Returns:
    `gain` (3,) float32 ~ U(1 - d, 1 + d), `offset` () float32 ~ U(-o, o), `noise` `image_shape`
    float32 ~ N(0, sigma^2), with d, o, sigma = `color_gain_max_delta`, `color_offset_max`, `color_noise_std`.
  """
  gain_key, offset_key, noise_key = jax.random.split(key, 3)
  delta = config.color_gain_max_delta
  gain = jax.random.uniform(gain_key, (3,), jnp.float32, 1.0 - delta, 1.0 + delta)
  offset = jax.random.uniform(offset_key, (), jnp.float32, -config.color_offset_max, config.color_offset_max)
  noise = config.color_noise_std * jax.random.normal(noise_key, image_shape, jnp.float32)
  return {'gain': gain, 'offset': offset, 'noise': noise}


def sample_augmentation(
    key: jax.Array, image_shape: tuple[int, ...], config: ml_collections.ConfigDict
) -> dict[str, dict[str, jax.Array]]:
  """Every random draw of one example: {'motion_blur', 'geometry', 'color'} (the samplers above).

  Args:
    key: the example's key (`example_key`).
    image_shape: (H, W, 3).
    config: `settings.augment_config()`.
  """
  geometry_key, blur_key, color_key = jax.random.split(key, 3)
  return {
      'motion_blur': sample_motion_blur(blur_key, config),
      'geometry': sample_geometry(geometry_key, config),
      'color': sample_color(color_key, image_shape, config),
  }


# ----------------------------------------------------------------------------------------------------------
# Geometry.


def _rotation_z(angle_rad: jax.Array) -> jax.Array:
  """(3, 3) rotation about the optical axis; its top-left block is R2(theta) in (x right, y down)."""
  cos, sin = jnp.cos(angle_rad), jnp.sin(angle_rad)
  zero, one = jnp.zeros_like(cos), jnp.ones_like(cos)
  return jnp.stack([jnp.stack([cos, -sin, zero]), jnp.stack([sin, cos, zero]), jnp.stack([zero, zero, one])])


def _flip_linear(flip: jax.Array, dims: int) -> jax.Array:
  """(dims, dims) diag(-1, 1, ...) when `flip`, else the identity."""
  sign = jnp.where(flip, -1.0, 1.0).astype(jnp.float32)
  return jnp.diag(jnp.concatenate([sign[None], jnp.ones([dims - 1], jnp.float32)]))


def image_affine(geometry: Mapping[str, jax.Array], height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """The warp p' = L p + T of `geometry` in pixel coordinates (`augment.image_affine`).

  Returns:
    L = s R2(theta) F2 (2, 2) float32 and T (2,) float32 pixels.
  """
  affine = geometry['zoom'] * _rotation_z(geometry['angle_rad'])[:2, :2]
  flip_offset = jnp.stack([jnp.where(geometry['flip'], float(width), 0.0), 0.0]).astype(jnp.float32)
  centre = jnp.array([width / 2.0, height / 2.0], jnp.float32)
  # T = A (w - c) + c + t: flip (x -> W - x), then rotate and zoom about the centre c, then translate.
  offset = _matvec(affine, flip_offset - centre) + centre + geometry['translation_px']
  return _matmul(affine, _flip_linear(geometry['flip'], 2)), offset


def _warp_intrinsics(intrinsics: jax.Array, linear: jax.Array, offset: jax.Array, motion: jax.Array) -> jax.Array:
  """(3, 3) K' = [L K2 (R2 F2)^T | L k + T; 0 0 1] of (3, 3) K, the warp (L, T) and the motion G (3, 3)."""
  top = jnp.concatenate(
      [
          _matmul(_matmul(linear, intrinsics[:2, :2]), motion[:2, :2].T),
          (_matvec(linear, intrinsics[:2, 2]) + offset)[:, None],
      ],
      axis=1,
  )
  return jnp.concatenate([top, jnp.array([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)


def _mirror_hand(params: Mapping[str, jax.Array], source: str, constants: Any) -> dict[str, jax.Array]:
  """`augment._mirror_hand`: `source` hand parameters -> the other side's mirrored hand."""
  target = _OTHER_SIDE[source]
  mirror = jnp.diag(jnp.array([-1.0, 1.0, 1.0], jnp.float32))
  betas = params['betas']
  return {
      'root_rotmat': _matmul(_matmul(mirror, params['root_rotmat']), mirror),
      'hand_pose': (
          _matvec(jnp.asarray(constants.mirror_pose_matrix[source]).T, params['hand_pose'])
          + jnp.asarray(constants.mirror_pose_offset[source])
      ),
      'betas': betas,
      'trans': (
          _matvec(mirror, _rest_wrist(constants, source, betas) + params['trans'])
          - _rest_wrist(constants, target, betas)
      ),
  }


def _rotate_hand(
    params: Mapping[str, jax.Array], side: str, rotation: jax.Array, constants: Any
) -> dict[str, jax.Array]:
  """`augment._rotate_hand`: the hand rotated by `rotation` (3, 3) about the camera centre."""
  wrist = _rest_wrist(constants, side, params['betas'])
  return dict(
      params,
      root_rotmat=_matmul(rotation, params['root_rotmat']),
      trans=_matvec(rotation, wrist + params['trans']) - wrist,
  )


def grid_scale(frame_hw: tuple[int, int], grid_hw: tuple[int, int]) -> float:
  """The factor k = h / H of a grid (h, w) that is the camera frame (H, W) scaled down by one factor.

  In pixel coordinates (corners at integers) a grid pixel covers 1 / k frame pixels, so the frame's
  warp p' = L p + T is p' = L p + k T on that grid.
  """
  (height, width), (grid_height, grid_width) = frame_hw, grid_hw
  if grid_height * width != grid_width * height or grid_height > height:
    raise ValueError(f'a {grid_height}x{grid_width} map must be the {height}x{width} frame scaled down by one factor')
  return grid_height / height


def _source_coordinates(linear: jax.Array, offset: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """(H, W) x and (H, W) y input index coordinates that output pixel (row, col) reads.

  As `augment._warp_images` sets up ImageProjectiveTransformV3: index coordinates have pixel centres at
  integers, so output index q reads L^-1 (q + 0.5 - T) - 0.5.
  """
  determinant = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
  inverse = jnp.stack([jnp.stack([linear[1, 1], -linear[0, 1]]), jnp.stack([-linear[1, 0], linear[0, 0]])])
  inverse = inverse / determinant
  index_offset = _matvec(inverse, 0.5 - offset) - 0.5
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  x = inverse[0, 0] * cols + inverse[0, 1] * rows + index_offset[0]
  y = inverse[1, 0] * cols + inverse[1, 1] * rows + index_offset[1]
  return x, y


def _read(image: jax.Array, row: jax.Array, col: jax.Array) -> jax.Array:
  """image[row, col] for (H, W) float index arrays holding integers; 0 where outside the image."""
  height, width = image.shape[:2]
  inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
  values = image[jnp.clip(row, 0, height - 1).astype(jnp.int32), jnp.clip(col, 0, width - 1).astype(jnp.int32)]
  inside = inside.reshape(inside.shape + (1,) * (values.ndim - inside.ndim))
  return jnp.where(inside, values, jnp.zeros_like(values))


def _sample_nearest(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """(H, W, ...) `image` at coordinates x, y (H, W), rounded half away from zero (TF's std::round)."""
  away = jax.lax.RoundingMethod.AWAY_FROM_ZERO
  return _read(image, jax.lax.round(y, away), jax.lax.round(x, away))


def _sample_bilinear(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """(H, W, C) float32 `image` bilinearly at x, y (H, W), with TensorFlow's formula and 0 outside."""
  x0, y0 = jnp.floor(x), jnp.floor(y)
  x1, y1 = x0 + 1.0, y0 + 1.0
  top = (x1 - x)[..., None] * _read(image, y0, x0) + (x - x0)[..., None] * _read(image, y0, x1)
  bottom = (x1 - x)[..., None] * _read(image, y1, x0) + (x - x0)[..., None] * _read(image, y1, x1)
  return (y1 - y)[..., None] * top + (y - y0)[..., None] * bottom


def apply_geometry(
    example: Mapping[str, jax.Array],
    geometry: Mapping[str, jax.Array],
    constants: Any,
    dense_interpolation: str = 'nearest',
    frame_hw: tuple[int, int] | None = None,
) -> dict[str, jax.Array]:
  """Applies one geometric augmentation consistently to every target (`augment.apply_geometry`).

  Args:
    example: one flat example: `image` float32 on the 0..255 scale, `seg` int32, `dense` float32
      (..., 3), `intrinsics` (3, 3) float32 for the camera frame, `mano_<side>_<key>` float32. The
      image and the labels may each be on a grid coarser than the frame by one factor (`grid_scale`;
      labels at the losses' grid, shipped lean by `input_pipeline`; the image at the network's input
      side, `augment_batch(output_size=...)`): each is warped on its own grid.
    geometry: `sample_geometry` output (or the same keys given by hand).
    constants: `augment.mano_constants(pair)` or `DeviceManoConstants`.
    dense_interpolation: 'nearest' or 'bilinear'.
    frame_hw: (H, W) of the camera frame the intrinsics and `geometry`'s translation are in; None: the
      image's grid.

  Returns:
    The augmented example; keys other than image, seg, dense, intrinsics and MANO are unchanged.
  """
  if dense_interpolation not in INTERPOLATIONS:
    raise ValueError(f'dense_interpolation must be one of {INTERPOLATIONS}, got {dense_interpolation!r}')
  height, width = frame_hw or example['image'].shape[:2]
  linear, offset = image_affine(geometry, height, width)

  def source_coordinates(grid_hw):
    return _source_coordinates(linear, offset * grid_scale((height, width), grid_hw), *grid_hw)

  image = _sample_bilinear(example['image'], *source_coordinates(example['image'].shape[:2]))
  x, y = source_coordinates(example['seg'].shape[:2])
  seg = _sample_nearest(example['seg'], x, y)
  sample_dense = _sample_nearest if dense_interpolation == 'nearest' else _sample_bilinear
  dense = sample_dense(example['dense'], x, y)
  swapped = jnp.where(
      seg == schema.SEG_LEFT, schema.SEG_RIGHT, jnp.where(seg == schema.SEG_RIGHT, schema.SEG_LEFT, seg)
  )
  seg = jnp.where(geometry['flip'], swapped, seg).astype(example['seg'].dtype)

  hands = {side: {key: example[mano_feature(side, key)] for key in schema.MANO_KEYS} for side in schema.SIDES}
  mirrored = {_OTHER_SIDE[side]: _mirror_hand(hands[side], side, constants) for side in schema.SIDES}
  rotation = _rotation_z(geometry['angle_rad'])
  motion = _matmul(rotation, _flip_linear(geometry['flip'], 3))
  out = dict(
      example,
      image=image,
      seg=seg,
      dense=dense,
      intrinsics=_warp_intrinsics(example['intrinsics'], linear, offset, motion),
  )
  for side in schema.SIDES:
    hand = {key: jnp.where(geometry['flip'], mirrored[side][key], hands[side][key]) for key in schema.MANO_KEYS}
    hand = _rotate_hand(hand, side, rotation, constants)
    out.update({mano_feature(side, key): hand[key] for key in schema.MANO_KEYS})
  return out


# ----------------------------------------------------------------------------------------------------------
# Motion blur and colour.


def motion_blur_kernel(size_px: jax.Array, angle_rad: jax.Array, grid_px: int) -> jax.Array:
  """(grid_px, grid_px) float32 kernel summing to 1: a line of length `size_px` through the centre.

  `augment.motion_blur_kernel`: direction (cos, sin)(angle) in (x right, y down), a cell's weight is its
  tent-filtered distance across the line times its overlap with the segment along it. `grid_px` is odd
  and at least `size_px`.
  """
  centre = (grid_px - 1) / 2.0
  coords = jnp.arange(grid_px, dtype=jnp.float32) - centre
  dx, dy = coords[None, :], coords[:, None]
  cos, sin = jnp.cos(angle_rad), jnp.sin(angle_rad)
  along = jnp.abs(dx * cos + dy * sin)
  across = jnp.abs(-dx * sin + dy * cos)
  half_length = jnp.asarray(size_px, jnp.float32) / 2.0
  weight = jax.nn.relu(1.0 - across) * jnp.clip(half_length + 0.5 - along, 0.0, 1.0)
  return weight / jnp.sum(weight)


def motion_blur(image: jax.Array, size_px: jax.Array, angle_rad: jax.Array, grid_px: int) -> jax.Array:
  """(H, W, C) float32 `image` correlated with `motion_blur_kernel`, reflected border (`augment.motion_blur`).

  The correlation is a sum of grid_px^2 shifted copies, which XLA fuses into one pass; `grid_px` is
  `config.motion_blur_max_size_px | 1`.
  """
  kernel = motion_blur_kernel(size_px, angle_rad, grid_px)
  pad = grid_px // 2
  padded = jnp.pad(image, [(pad, pad), (pad, pad), (0, 0)], mode='reflect')
  height, width = image.shape[:2]
  out = jnp.zeros_like(image)
  for dy in range(grid_px):
    for dx in range(grid_px):
      out = out + kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
  return out


def apply_color(image: jax.Array, color: Mapping[str, jax.Array]) -> jax.Array:
  """(H, W, 3) float32 on the 0..255 scale -> image * gain + offset + noise (`sample_color`), unclipped."""
  return image * color['gain'] + color['offset'] + color['noise']


def to_uint8(image: jax.Array) -> jax.Array:
  """Float image on the 0..255 scale -> uint8, rounded (half to even, as tf.round) and clipped."""
  return jnp.clip(jnp.round(image), 0.0, 255.0).astype(jnp.uint8)


# ----------------------------------------------------------------------------------------------------------
# One example, and the batch.


def _geometry_enabled(config: ml_collections.ConfigDict) -> bool:
  return bool(config.flip or config.rotate or config.zoom or config.translate)


def resized_noise_std(in_size: int, out_size: int) -> float:
  """Standard deviation left of unit white noise on an `in_size` grid after `jax.image.resize` to
  `out_size` per axis, linear with antialiasing (`inference.model_input`'s resize): sum_j m_ij^2 for the
  separable weights m of a central output pixel (1.0 when the sizes are equal)."""
  if in_size == out_size:
    return 1.0
  with jax.ensure_compile_time_eval():
    weights = jax.image.resize(jnp.eye(in_size, dtype=jnp.float32), (out_size, in_size), 'linear', antialias=True)
    return float(jnp.sum(weights[out_size // 2] ** 2))


def apply_augmentation(
    example: Mapping[str, jax.Array],
    params: Mapping[str, Mapping[str, jax.Array]],
    constants: Any,
    config: ml_collections.ConfigDict,
    frame_hw: tuple[int, int] | None = None,
) -> dict[str, jax.Array]:
  """One example augmented with given draws (`sample_augmentation`), in `augment.augment`'s order.

  Args:
    example: one flat example (`apply_geometry`), `image` (h, w, 3) uint8 or float on the 0..255 scale.
    params: `sample_augmentation` output (its noise at the image's grid).
    constants: `augment.mano_constants(pair)` or `DeviceManoConstants`.
    config: `settings.augment_config()`; switches that are off are skipped (module docstring).
    frame_hw: (H, W) of the camera frame, when the image is that frame resized to a coarser grid
      (module docstring, "At the network's input side"); None: the image is the frame.

  Returns:
    The augmented example, `image` (h, w, 3) uint8.
  """
  image = example['image'].astype(jnp.float32)
  frame_hw = frame_hw or image.shape[:2]
  scale = grid_scale(frame_hw, image.shape[:2])
  if config.motion_blur:
    blur = params['motion_blur']
    grid_px = math.ceil(config.motion_blur_max_size_px * scale) | 1
    blurred = motion_blur(image, blur['size_px'] * scale, blur['angle_rad'], grid_px)
    image = jnp.where(blur['apply'], blurred, image)
  out = dict(example, image=image)
  if _geometry_enabled(config):
    out = apply_geometry(out, params['geometry'], constants, config.dense_interpolation, frame_hw)
  if config.color:
    noise = params['color']['noise'] * resized_noise_std(frame_hw[1], image.shape[1])
    image = apply_color(out['image'], dict(params['color'], noise=noise))
  else:
    image = out['image']
  return dict(out, image=to_uint8(image))


def augment_example(
    example: Mapping[str, jax.Array],
    key: jax.Array,
    constants: Any,
    config: ml_collections.ConfigDict,
    frame_hw: tuple[int, int] | None = None,
) -> dict[str, jax.Array]:
  """One example augmented with draws from `key` (its `example_key`); see `apply_augmentation`."""
  params = sample_augmentation(key, example['image'].shape, config)
  return apply_augmentation(example, params, constants, config, frame_hw)


def augment_batch(
    batch: Mapping[str, jax.Array],
    key: jax.Array,
    step: jax.Array | int,
    constants: Any,
    config: ml_collections.ConfigDict,
    *,
    first_index: jax.Array | int = 0,
    output_size: int | None = None,
) -> dict[str, jax.Array]:
  """The training augmentation of a batch, on the device; jit-able (`config` is static).

  Args:
    batch: the trainer's batch (`input_pipeline` docstring): `image` (B, H, W, 3) uint8, `seg` (B, h, w)
      integer, `dense` (B, h, w, 3) float32 in [0, 1] (labels at the image's grid or a coarser one,
      `apply_geometry`), `intrinsics` (B, 3, 3) float32, `mano_<side>_<key>`
      (B, ...) float32 (`schema.MANO_SHAPES`); other keys pass through unchanged.
    key: the run's augmentation key (`run_key`).
    step: the train step () int (e.g. `state.step`).
    constants: `augment.mano_constants(pair)` (close over it) or `DeviceManoConstants` (may be a jit argument).
    config: `settings.augment_config()` (`config.data.augment`).
    first_index: index of row 0; row b uses index `first_index + b` (`example_key`). Inside a jit over the
      global batch the default makes the index the global row.
    output_size: the network's input side S; when smaller than the image, the image is resized to S
      first and augmented there (module docstring, "At the network's input side"). None: the image's side.

  Returns:
    The batch with image (uint8, (B, S, S, 3)), seg, dense, intrinsics and MANO parameters augmented.
  """
  batch_size, height, width = batch['image'].shape[:3]
  chex.assert_shape(batch['image'], (batch_size, height, width, 3))
  chex.assert_type(batch['image'], jnp.uint8)
  label_height, label_width = batch['seg'].shape[1:3]
  grid_scale((height, width), (label_height, label_width))
  chex.assert_shape(batch['seg'], (batch_size, label_height, label_width))
  chex.assert_type(batch['seg'], int)
  chex.assert_shape(batch['dense'], (batch_size, label_height, label_width, 3))
  chex.assert_shape(batch['intrinsics'], (batch_size, 3, 3))
  chex.assert_type([batch['dense'], batch['intrinsics']], float)
  for side in schema.SIDES:
    for name, shape in schema.MANO_SHAPES.items():
      chex.assert_shape(batch[mano_feature(side, name)], (batch_size,) + shape)
  indices = first_index + jnp.arange(batch_size, dtype=jnp.int32)
  keys = jax.vmap(example_key, in_axes=(None, None, 0))(key, step, indices)
  examples = {name: batch[name] for name in AUGMENTED_KEYS}
  if output_size is not None and output_size != width:
    grid_scale((height, width), (output_size, output_size))
    examples['image'] = jax.image.resize(
        examples['image'].astype(jnp.float32), (batch_size, output_size, output_size, 3), 'linear', antialias=True
    )
  augmented = jax.vmap(
      lambda example, example_key_: augment_example(example, example_key_, constants, config, (height, width))
  )(examples, keys)
  return dict(batch, **augmented)
