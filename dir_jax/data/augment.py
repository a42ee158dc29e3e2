"""Training augmentations as TensorFlow ops for the tf.data graph, with exact 3D targets.

Where they differ from the reference's: docs/quirks.md#q25.

One example is augmented in this order:
1. motion blur with probability `motion_blur_prob`: a normalised line kernel, `size_px` uniform in
   [`motion_blur_min_size_px`, `motion_blur_max_size_px`], direction uniform in
   +-`motion_blur_max_angle_deg`, reflected border (cv2.filter2D's default);
2. one geometric warp, sampled by `sample_geometry` and applied by `apply_geometry`: a horizontal flip
   (probability `flip_prob`), then rotation by theta about the image centre, zoom by s about the
   image centre and translation by t pixels, resampled once: image bilinear, seg nearest, dense as
   `dense_interpolation` (nearest by default), black (0) border;
3. colour: per-channel gain U(1 - d, 1 + d), one offset U(-o, o) for all channels, Gaussian noise
   N(0, sigma^2) per pixel and channel, then rounding and clipping to uint8.
The reference flips before it blurs; blurring first is the same in distribution (the blur direction is
symmetric about 0) and lets the flip join the single warp.

Geometry (pixel convention of `schema`: pixel centres at i + 0.5, so a flip is x' = W - x). The warp is
p' = L p + T with L = A F2, A = s R2(theta), F2 = diag(-1, 1) when flipped (else identity). It is
realised in 3D by X' = G X with G = Rz(theta) F, F = diag(-1, 1, 1) when flipped: the camera-frame
hands are mirrored and rotated about the optical axis, and the intrinsics become
    K'[:2, :2] = L K[:2, :2] (R2(theta) F2)^T,    K'[:2, 2] = L K[:2, 2] + T,
so that projecting X' with K' gives exactly the warped projection of X. With fx = fy (and no skew) K'
is again diagonal with f' = s f; with fx != fy its 2x2 block gets off-diagonal (skew) terms, K[0, 1]
and also K[1, 0] (the block is s R2 diag(fx, fy) R2^T up to signs), and the projection
`K[:2, :2] @ (x/z, y/z) + K[:2, 2]` stays exact (`render.rasterizer.project_perspective` uses the
full block); code that assumes K[1, 0] = 0 or K[0, 1] = 0 must not be used on augmented intrinsics.
Zoom and translation change only K, i.e. they are a zoom of the camera: a deliberate, physically
consistent choice; the reference instead back-projects the warped 2D labels with their old depth and
unchanged K, which stretches the 3D target in x and y only (docs/quirks.md#q25).

MANO parameters follow `dir_jax.mano.rigid` exactly: the hands' root rotation and translation are
changed (root' = Rz root, trans' = Rz (J0 + trans) - J0 with J0 the rest wrist, linear in the betas),
and a flip turns each hand into the other side's hand (`rigid.mirror_params`, whose PCA mapping is
affine in the coefficients). The seg labels SEG_LEFT and SEG_RIGHT swap under a flip. The dense map is
only flipped with the image: its colours are per-vertex template coordinates, the same for both hands
by vertex index, and the mirror of a hand is the other side's hand with the same vertex indices.

Examples travel as flat dicts (see `mano_feature`): `image` (H, W, 3) float32 in [0, 255] (uint8 after
`to_uint8`), `seg` (H, W) int32, `dense` (H, W, 3) float32 in [0, 1], `intrinsics` (3, 3) float32 and
`mano_<side>_<key>` float32 (`schema.MANO_SHAPES`); other keys pass through unchanged.
"""

import dataclasses
import math

import ml_collections
import numpy as np
import tensorflow as tf

from dir_jax.data import schema
from dir_jax.mano.asset import ManoPair

# Mirroring x -> -x maps a joint's axis-angle (ax, ay, az) to (ax, -ay, -az).
_MIRROR_AXIS_ANGLE_SIGN = np.tile([1.0, -1.0, -1.0], 15)
_OTHER_SIDE = {'left': 'right', 'right': 'left'}
INTERPOLATIONS = ('nearest', 'bilinear')


def mano_feature(side: str, key: str) -> str:
  """Flat example key of one MANO parameter, e.g. `mano_left_betas`."""
  return f'mano_{side}_{key}'


@dataclasses.dataclass(frozen=True)
class ManoConstants:
  """What the augmentations need from the MANO pair, as float32 numpy arrays keyed by side.

  Attributes:
    wrist_template_m: (3,) metres, the rest wrist J0 of the mean shape (`J_regressor[0] @ v_template`).
    wrist_shapedirs_m: (3, 10) metres per beta, so that J0(betas) = wrist_template_m + wrist_shapedirs_m @ betas.
    mirror_pose_matrix: (45, 45) keyed by the source side: the other side's PCA coefficients of the
      mirrored hand are `pca @ mirror_pose_matrix + mirror_pose_offset`.
    mirror_pose_offset: (45,) keyed by the source side.
  """

  wrist_template_m: dict[str, np.ndarray]
  wrist_shapedirs_m: dict[str, np.ndarray]
  mirror_pose_matrix: dict[str, np.ndarray]
  mirror_pose_offset: dict[str, np.ndarray]


def mano_constants(pair: ManoPair) -> ManoConstants:
  """The constants of `pair` (left fix applied), computed in float64."""
  wrist_template, wrist_shapedirs, pose_matrix, pose_offset = {}, {}, {}, {}
  for side in schema.SIDES:
    source, target = pair[side], pair[_OTHER_SIDE[side]]
    wrist_row = np.asarray(source.J_regressor, np.float64)[0]
    wrist_template[side] = (wrist_row @ np.asarray(source.v_template, np.float64)).astype(np.float32)
    wrist_shapedirs[side] = np.einsum('v,vcb->cb', wrist_row, np.asarray(source.shapedirs, np.float64)).astype(
        np.float32
    )
    # pose_aa = mean_s + pca @ C_s; mirrored = pose_aa * sign; target pca = (mirrored - mean_t) @ C_t^-1.
    target_inverse = np.linalg.inv(np.asarray(target.hands_components, np.float64))
    pose_matrix[side] = (
        (np.asarray(source.hands_components, np.float64) * _MIRROR_AXIS_ANGLE_SIGN) @ target_inverse
    ).astype(np.float32)
    pose_offset[side] = (
        (
            np.asarray(source.hands_mean, np.float64) * _MIRROR_AXIS_ANGLE_SIGN
            - np.asarray(target.hands_mean, np.float64)
        )
        @ target_inverse
    ).astype(np.float32)
  return ManoConstants(wrist_template, wrist_shapedirs, pose_matrix, pose_offset)


def _rest_wrist(constants: ManoConstants, side: str, betas: tf.Tensor) -> tf.Tensor:
  """(3,) metres: J0 of `side` shaped by `betas` (10,)."""
  return constants.wrist_template_m[side] + tf.linalg.matvec(constants.wrist_shapedirs_m[side], betas)


def sample_geometry(seed: tf.Tensor, config: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
  """Random geometric augmentation from a stateless seed.

  Args:
    seed: (2,) int stateless seed.
    config: `settings.augment_config()`.

  Returns:
    `flip` () bool, `angle_rad` () float32, `zoom` () float32 (s), `translation_px` (2,) float32.
  """
  u = tf.random.stateless_uniform([5], seed, dtype=tf.float32)
  symmetric = 2.0 * u - 1.0
  flip = u[0] < config.flip_prob if config.flip else tf.constant(False)
  angle = symmetric[1] * math.radians(config.rotation_max_deg) if config.rotate else tf.constant(0.0)
  zoom = 1.0 + symmetric[2] * config.zoom_max_delta if config.zoom else tf.constant(1.0)
  translation = symmetric[3:] * config.translation_max_px if config.translate else tf.zeros([2])
  return {'flip': flip, 'angle_rad': angle, 'zoom': zoom, 'translation_px': translation}


def _rotation_z(angle_rad: tf.Tensor) -> tf.Tensor:
  """(3, 3) rotation about the optical axis; its top-left block is R2(theta) in (x right, y down)."""
  cos, sin = tf.cos(angle_rad), tf.sin(angle_rad)
  return tf.stack([tf.stack([cos, -sin, 0.0]), tf.stack([sin, cos, 0.0]), tf.constant([0.0, 0.0, 1.0])])


def _flip_linear(flip: tf.Tensor, dims: int) -> tf.Tensor:
  """(dims, dims) diag(-1, 1, ...) when `flip`, else the identity."""
  sign = tf.where(flip, -1.0, 1.0)
  return tf.linalg.diag(tf.concat([sign[None], tf.ones([dims - 1])], axis=0))


def image_affine(geometry: dict[str, tf.Tensor], height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
  """The warp p' = L p + T of `geometry` in pixel coordinates (schema convention).

  Returns:
    L = s R2(theta) F2 (2, 2) float32 and T (2,) float32 pixels.
  """
  affine = geometry['zoom'] * _rotation_z(geometry['angle_rad'])[:2, :2]
  flip_offset = tf.stack([tf.where(geometry['flip'], float(width), 0.0), 0.0])
  centre = tf.constant([width / 2.0, height / 2.0])
  # T = A (w - c) + c + t: flip (x -> W - x), then rotate and zoom about the centre c, then translate.
  offset = tf.linalg.matvec(affine, flip_offset - centre) + centre + geometry['translation_px']
  return affine @ _flip_linear(geometry['flip'], 2), offset


def _warp_intrinsics(intrinsics: tf.Tensor, linear: tf.Tensor, offset: tf.Tensor, motion: tf.Tensor) -> tf.Tensor:
  """(3, 3) K' = [L K2 (R2 F2)^T | L k + T; 0 0 1] of (3, 3) K, the warp (L, T) and the motion G (3, 3)."""
  top = tf.concat(
      [
          linear @ intrinsics[:2, :2] @ tf.transpose(motion[:2, :2]),
          (tf.linalg.matvec(linear, intrinsics[:2, 2]) + offset)[:, None],
      ],
      axis=1,
  )
  return tf.concat([top, tf.constant([[0.0, 0.0, 1.0]])], axis=0)


def _mirror_hand(params: dict[str, tf.Tensor], source: str, constants: ManoConstants) -> dict[str, tf.Tensor]:
  """`rigid.mirror_params` in TF: `source` hand parameters -> the other side's mirrored hand."""
  target = _OTHER_SIDE[source]
  mirror = tf.constant(np.diag([-1.0, 1.0, 1.0]), tf.float32)
  betas = params['betas']
  return {
      'root_rotmat': mirror @ params['root_rotmat'] @ mirror,
      'hand_pose': (
          tf.linalg.matvec(constants.mirror_pose_matrix[source], params['hand_pose'], transpose_a=True)
          + constants.mirror_pose_offset[source]
      ),
      'betas': betas,
      'trans': (
          tf.linalg.matvec(mirror, _rest_wrist(constants, source, betas) + params['trans'])
          - _rest_wrist(constants, target, betas)
      ),
  }


def _rotate_hand(
    params: dict[str, tf.Tensor], side: str, rotation: tf.Tensor, constants: ManoConstants
) -> dict[str, tf.Tensor]:
  """`rigid.transform_params` in TF with zero translation: the hand rotated by `rotation` (3, 3)."""
  wrist = _rest_wrist(constants, side, params['betas'])
  return dict(
      params,
      root_rotmat=rotation @ params['root_rotmat'],
      trans=tf.linalg.matvec(rotation, wrist + params['trans']) - wrist,
  )


def _warp_images(images: tf.Tensor, linear: tf.Tensor, offset: tf.Tensor, interpolation: str) -> tf.Tensor:
  """(H, W, C) float32 resampled so that output pixel p' shows input pixel L^-1 (p' - T); 0 outside."""
  inverse = tf.linalg.inv(linear)
  # ImageProjectiveTransformV3 maps output index coordinates (pixel centres at integers) to input ones.
  index_offset = tf.linalg.matvec(inverse, 0.5 - offset) - 0.5
  transform = tf.stack(
      [inverse[0, 0], inverse[0, 1], index_offset[0], inverse[1, 0], inverse[1, 1], index_offset[1], 0.0, 0.0]
  )
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images[None],
      transforms=transform[None],
      output_shape=tf.shape(images)[:2],
      fill_value=0.0,
      interpolation=interpolation.upper(),
      fill_mode='CONSTANT',
  )[0]


def apply_geometry(
    example: dict[str, tf.Tensor],
    geometry: dict[str, tf.Tensor],
    constants: ManoConstants,
    dense_interpolation: str = 'nearest',
) -> dict[str, tf.Tensor]:
  """Applies one geometric augmentation (see the module docstring) consistently to every target.

  Args:
    example: flat example (module docstring); `image` float32.
    geometry: `sample_geometry` output.
    constants: `mano_constants` of the MANO pair.
    dense_interpolation: 'nearest' or 'bilinear'.

  Returns:
    The augmented example; keys other than image, seg, dense, intrinsics and MANO are unchanged.
  """
  if dense_interpolation not in INTERPOLATIONS:
    raise ValueError(f'dense_interpolation must be one of {INTERPOLATIONS}, got {dense_interpolation!r}')
  height, width = example['image'].shape[:2]
  linear, offset = image_affine(geometry, height, width)
  image = _warp_images(example['image'], linear, offset, 'bilinear')
  seg_float = tf.cast(example['seg'], tf.float32)[..., None]
  if dense_interpolation == 'nearest':
    warped = _warp_images(tf.concat([seg_float, example['dense']], axis=-1), linear, offset, 'nearest')
    seg_float, dense = warped[..., :1], warped[..., 1:]
  else:
    seg_float = _warp_images(seg_float, linear, offset, 'nearest')
    dense = _warp_images(example['dense'], linear, offset, 'bilinear')
  seg = tf.cast(tf.round(seg_float[..., 0]), tf.int32)
  swapped = tf.where(seg == schema.SEG_LEFT, schema.SEG_RIGHT, tf.where(seg == schema.SEG_RIGHT, schema.SEG_LEFT, seg))
  seg = tf.where(geometry['flip'], swapped, seg)

  hands = {side: {key: example[mano_feature(side, key)] for key in schema.MANO_KEYS} for side in schema.SIDES}
  mirrored = {_OTHER_SIDE[side]: _mirror_hand(hands[side], side, constants) for side in schema.SIDES}
  rotation = _rotation_z(geometry['angle_rad'])
  motion = rotation @ _flip_linear(geometry['flip'], 3)
  out = dict(
      example,
      image=image,
      seg=seg,
      dense=dense,
      intrinsics=_warp_intrinsics(example['intrinsics'], linear, offset, motion),
  )
  for side in schema.SIDES:
    hand = {key: tf.where(geometry['flip'], mirrored[side][key], hands[side][key]) for key in schema.MANO_KEYS}
    hand = _rotate_hand(hand, side, rotation, constants)
    out.update({mano_feature(side, key): hand[key] for key in schema.MANO_KEYS})
  return out


def motion_blur_kernel(size_px: tf.Tensor, angle_rad: tf.Tensor, grid_px: int) -> tf.Tensor:
  """(grid_px, grid_px) float32 kernel summing to 1: a line of length `size_px` through the centre.

  The line has direction (cos, sin)(angle) in (x right, y down) and is antialiased: a cell's weight is
  its tent-filtered distance across the line times its overlap with the segment along it. `grid_px`
  is odd and at least `size_px`.
  """
  centre = (grid_px - 1) / 2.0
  coords = tf.range(grid_px, dtype=tf.float32) - centre
  dx, dy = coords[None, :], coords[:, None]
  cos, sin = tf.cos(angle_rad), tf.sin(angle_rad)
  along = tf.abs(dx * cos + dy * sin)
  across = tf.abs(-dx * sin + dy * cos)
  half_length = tf.cast(size_px, tf.float32) / 2.0
  weight = tf.nn.relu(1.0 - across) * tf.clip_by_value(half_length + 0.5 - along, 0.0, 1.0)
  return weight / tf.reduce_sum(weight)


def motion_blur(image: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
  """(H, W, 3) float32 image blurred along a random line (`motion_blur_*` in `config`)."""
  size_seed, angle_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  size_px = tf.random.stateless_uniform(
      [], size_seed, config.motion_blur_min_size_px, config.motion_blur_max_size_px + 1, dtype=tf.int32
  )
  max_angle = math.radians(config.motion_blur_max_angle_deg)
  angle = tf.random.stateless_uniform([], angle_seed, -max_angle, max_angle)
  grid_px = config.motion_blur_max_size_px | 1
  kernel = motion_blur_kernel(size_px, angle, grid_px)
  pad = grid_px // 2
  padded = tf.pad(image[None], [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
  channels = image.shape[-1]
  filters = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  return tf.nn.depthwise_conv2d(padded, filters, [1, 1, 1, 1], 'VALID')[0]


def color_augment(image: tf.Tensor, seed: tf.Tensor, config: ml_collections.ConfigDict) -> tf.Tensor:
  """(H, W, 3) float32 on the 0..255 scale -> gain, offset and noise applied (`color_*`), unclipped."""
  gain_seed, offset_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  delta = config.color_gain_max_delta
  gain = tf.random.stateless_uniform([3], gain_seed, 1.0 - delta, 1.0 + delta)
  offset = tf.random.stateless_uniform([], offset_seed, -config.color_offset_max, config.color_offset_max)
  noise = tf.random.stateless_normal(tf.shape(image), noise_seed, stddev=config.color_noise_std)
  return image * gain + offset + noise


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """Float image on the 0..255 scale -> uint8, rounded and clipped."""
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def augment(
    example: dict[str, tf.Tensor], seed: tf.Tensor, config: ml_collections.ConfigDict, constants: ManoConstants
) -> dict[str, tf.Tensor]:
  """Training augmentation of one example (module docstring); deterministic for a seed.

  Args:
    example: flat example with `image` (H, W, 3) uint8 RGB.
    seed: (2,) int stateless seed.
    config: `settings.augment_config()`.
    constants: `mano_constants` of the MANO pair.

  Returns:
    The augmented example, `image` (H, W, 3) uint8.
  """
  geometry_seed, blur_choice_seed, blur_seed, color_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
  image = tf.cast(example['image'], tf.float32)
  if config.motion_blur:
    apply_blur = tf.random.stateless_uniform([], blur_choice_seed) < config.motion_blur_prob
    image = tf.cond(apply_blur, lambda: motion_blur(image, blur_seed, config), lambda: image)
  out = apply_geometry(
      dict(example, image=image), sample_geometry(geometry_seed, config), constants, config.dense_interpolation
  )
  image = color_augment(out['image'], color_seed, config) if config.color else out['image']
  return dict(out, image=to_uint8(image))
