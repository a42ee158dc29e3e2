"""Augmentations keep image, seg, dense, intrinsics and MANO targets consistent, exactly as `rigid` says."""

import math

import numpy as np
import pytest
import tensorflow as tf

from data_prep.interhand26m import preprocess
from dir_jax.data import augment, schema, settings
from dir_jax.mano.asset import ManoPair
from dir_jax.render import rasterizer
from tests.data import reference

# Vertices of a hand whose pixel (or a neighbour, to allow for silhouette vertices whose pixel centre
# lies just outside) is a hand pixel of the augmented seg.
MIN_VERTS_ON_HAND = 0.99
# The augmented seg against a fresh render of the augmented targets. Nearest resampling moves the
# silhouette by up to half a pixel (more than half an output pixel when zooming in), which costs the
# smaller, partly occluded labels of the builder's interacting crops more IoU: per-label IoU 0.940-0.987
# measured over all 21 examples and the CASES below (1.0 for flips and integer shifts). Label
# disagreements per boundary pixel of the fresh render do not depend on a label's size: 0.0-0.163
# measured; a render one pixel off (principal point moved 1 px in x or y) gives 0.21-0.49 (per-label
# IoU 0.83-0.97, so the IoU alone would miss some). Sub-pixel convention errors are caught exactly by the
# tests below.
MIN_LABEL_IOU = 0.93
MAX_MISMATCH_PER_BOUNDARY_PX = 0.2


def flat_example(example: dict) -> dict[str, tf.Tensor]:
  """A builder-form example as the flat float example `augment.apply_geometry` takes."""
  flat = {
      'image': tf.constant(example['image'], tf.float32),
      'seg': tf.constant(example['seg'][..., 0], tf.int32),
      'dense': tf.constant(example['dense'], tf.float32) / 255.0,
      'intrinsics': tf.constant(example['intrinsics']),
  }
  for side in schema.SIDES:
    for key in schema.MANO_KEYS:
      flat[augment.mano_feature(side, key)] = tf.constant(example['mano'][side][key])
  return flat


def geometry(flip=False, angle_deg=0.0, zoom=1.0, translation_px=(0.0, 0.0)) -> dict[str, tf.Tensor]:
  return {
      'flip': tf.constant(flip),
      'angle_rad': tf.constant(math.radians(angle_deg), tf.float32),
      'zoom': tf.constant(zoom, tf.float32),
      'translation_px': tf.constant(translation_px, tf.float32),
  }


@pytest.fixture(scope='module')
def constants(mano_pair):
  return augment.mano_constants(mano_pair)


def render_seg(mano_pair, verts_cam_m: dict[str, np.ndarray], intrinsics: np.ndarray) -> np.ndarray:
  """(256, 256) uint8 schema labels of both hands seen through `intrinsics`, rendered as the builder
  renders its targets (`preprocess.render_targets`, its dense colours).

  Args:
    mano_pair: the MANO models (faces).
    verts_cam_m: {side: (778, 3) camera-frame vertices, metres}, both sides.
    intrinsics: (3, 3) pixels; the 2x2 block may be a general matrix (after a warp).
  """
  seg, _ = preprocess.render_targets(verts_cam_m, mano_pair, intrinsics, preprocess.dense_vertex_colors(mano_pair))
  return seg[..., 0]


def boundary_pixels(seg: np.ndarray) -> np.ndarray:
  """(H, W) bool: pixels of an (H, W) label map with a 4-neighbour of another label."""
  boundary = np.zeros(seg.shape, bool)
  for axis in (0, 1):
    change = np.diff(seg, axis=axis) != 0
    head = [slice(None)] * 2
    head[axis] = slice(None, -1)
    tail = [slice(None)] * 2
    tail[axis] = slice(1, None)
    boundary[tuple(head)] |= change
    boundary[tuple(tail)] |= change
  return boundary


def check_targets_match_seg(mano_pair, out: dict) -> None:
  """Projected GT vertices land on their hand's pixels, and a fresh render matches the warped seg."""
  hands = reference.flat_hands(out)
  intrinsics = np.asarray(out['intrinsics'], np.float64)
  seg = np.asarray(out['seg'])
  verts_cam_m = {side: preprocess.hand_mesh(mano_pair[side], hands[side])[0] for side in schema.SIDES}
  size = seg.shape[0]
  hand_pixels = np.pad(seg > 0, 1)
  near_hand = np.zeros_like(seg, bool)
  for dy in range(3):
    for dx in range(3):
      near_hand |= hand_pixels[dy : dy + size, dx : dx + size]
  for side in schema.SIDES:
    px = rasterizer.project_perspective(verts_cam_m[side].astype(np.float64), intrinsics)[:, :2]
    inside = np.all((px >= 1) & (px < size - 1), axis=1)
    assert inside.sum() > 300, f'{side}: only {inside.sum()} vertices in the image'
    col, row = np.floor(px[inside]).astype(int).T
    assert near_hand[row, col].mean() >= MIN_VERTS_ON_HAND, side
  rendered = render_seg(mano_pair, verts_cam_m, intrinsics)
  for label in (schema.SEG_LEFT, schema.SEG_RIGHT):
    union = np.sum((rendered == label) | (seg == label))
    assert np.sum((rendered == label) & (seg == label)) / union >= MIN_LABEL_IOU, label
  mismatch_per_boundary_px = np.sum(rendered != seg) / np.sum(boundary_pixels(rendered))
  assert mismatch_per_boundary_px <= MAX_MISMATCH_PER_BOUNDARY_PX


CASES = {
    'rotation': geometry(angle_deg=70.0),
    'zoom_in': geometry(zoom=1.1),
    'zoom_out': geometry(zoom=0.9),
    'translation': geometry(translation_px=(9.0, -7.0)),
    'flip': geometry(flip=True),
    'all': geometry(flip=True, angle_deg=-130.0, zoom=0.92, translation_px=(-6.0, 8.0)),
}


@pytest.mark.parametrize('name', list(CASES))
def test_geometry_keeps_targets_on_the_warped_seg(mano_pair, examples, constants, name):
  example = examples['train'][0]
  out = augment.apply_geometry(flat_example(example), CASES[name], constants)
  check_targets_match_seg(mano_pair, out)


@pytest.mark.parametrize('name', list(CASES))
def test_geometry_targets_equal_the_rigid_reference(mano_pair, examples, constants, name):
  example = examples['train'][1]
  case = {key: value.numpy() for key, value in CASES[name].items()}
  out = augment.apply_geometry(flat_example(example), CASES[name], constants)
  want_intrinsics, want_hands = reference.augmented_targets(
      mano_pair,
      example['mano'],
      example['intrinsics'],
      bool(case['flip']),
      float(case['angle_rad']),
      float(case['zoom']),
      case['translation_px'],
  )
  # float32 arithmetic on ~600 px focal lengths and ~1 m translations.
  np.testing.assert_allclose(out['intrinsics'], want_intrinsics, rtol=1e-5, atol=1e-3)
  got_hands = reference.flat_hands(out)
  for side in schema.SIDES:
    for key in schema.MANO_KEYS:
      np.testing.assert_allclose(got_hands[side][key], want_hands[side][key], atol=2e-5, err_msg=f'{side} {key}')


def unmirrored_pca_pair(mano_pair: ManoPair, seed: int = 4) -> ManoPair:
  """`mano_pair` with the left PCA basis rotated and its mean moved, so that the mirror pose mapping
  (the identity for real and synthetic MANO) is a real, non-orthogonal 45x45 mapping."""
  rng = np.random.default_rng(seed)
  rotation, _ = np.linalg.qr(rng.normal(size=(45, 45)))
  left = mano_pair.left.replace(
      hands_components=(rotation @ mano_pair.left.hands_components).astype(np.float32),
      hands_mean=(mano_pair.left.hands_mean + 0.1 * rng.normal(size=45)).astype(np.float32),
  )
  return ManoPair(left=left, right=mano_pair.right)


def test_mirror_pose_mapping_for_unmirrored_pca_bases(mano_pair, examples):
  """The left PCA basis of real and synthetic MANO mirrors the right one (mapping = identity): perturb it."""
  pair = unmirrored_pca_pair(mano_pair)
  example = examples['train'][1]
  out = augment.apply_geometry(flat_example(example), CASES['all'], augment.mano_constants(pair))
  case = {key: value.numpy() for key, value in CASES['all'].items()}
  _, want_hands = reference.augmented_targets(
      pair,
      example['mano'],
      example['intrinsics'],
      True,
      float(case['angle_rad']),
      float(case['zoom']),
      case['translation_px'],
  )
  for side in schema.SIDES:
    np.testing.assert_allclose(
        reference.flat_hands(out)[side]['hand_pose'], want_hands[side]['hand_pose'], atol=2e-5, err_msg=side
    )


def test_identity_geometry_changes_nothing(examples, constants):
  example = flat_example(examples['train'][2])
  out = augment.apply_geometry(example, geometry(), constants)
  for key, value in example.items():
    np.testing.assert_allclose(out[key], value, atol=1e-6, err_msg=key)


def test_flip_mirrors_pixels_exactly_and_swaps_labels(examples, constants):
  example = flat_example(examples['train'][3])
  out = augment.apply_geometry(example, geometry(flip=True), constants)
  np.testing.assert_array_equal(out['image'], example['image'].numpy()[:, ::-1])
  np.testing.assert_array_equal(out['dense'], example['dense'].numpy()[:, ::-1])
  seg = example['seg'].numpy()[:, ::-1]
  swapped = np.select([seg == schema.SEG_LEFT, seg == schema.SEG_RIGHT], [schema.SEG_RIGHT, schema.SEG_LEFT], seg)
  np.testing.assert_array_equal(out['seg'], swapped)


def test_quarter_turn_and_integer_shift_move_pixels_exactly(examples, constants):
  """Pixel centres (i + 0.5) map onto pixel centres for these warps about the centre (128, 128)."""
  example = flat_example(examples['train'][3])
  turned = augment.apply_geometry(example, geometry(angle_deg=90.0), constants)
  # x' - 128 = -(y - 128), y' - 128 = x - 128: a clockwise quarter turn of the array; the image is
  # bilinear at float32 coordinates that are integers up to ~1e-5 px.
  np.testing.assert_array_equal(turned['seg'], np.rot90(example['seg'].numpy(), -1))
  np.testing.assert_allclose(turned['image'], np.rot90(example['image'].numpy(), -1), atol=0.01)
  shifted = augment.apply_geometry(example, geometry(translation_px=(9.0, -7.0)), constants)
  want = np.zeros_like(example['seg'].numpy())
  want[:-7, 9:] = example['seg'].numpy()[7:, :-9]
  np.testing.assert_array_equal(shifted['seg'], want)


def test_bilinear_dense_option(mano_pair, examples, constants):
  example = flat_example(examples['train'][0])
  out = augment.apply_geometry(example, CASES['all'], constants, dense_interpolation='bilinear')
  nearest = augment.apply_geometry(example, CASES['all'], constants)
  np.testing.assert_array_equal(out['seg'], nearest['seg'])
  inside = np.asarray(nearest['seg'] > 0)
  # Away from the silhouette the two differ by the sub-pixel shift of a smooth field only.
  assert np.median(np.abs(np.asarray(out['dense']) - np.asarray(nearest['dense']))[inside]) < 0.01
  with pytest.raises(ValueError, match='dense_interpolation'):
    augment.apply_geometry(example, CASES['all'], constants, dense_interpolation='cubic')


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_random_augmentation_keeps_targets_on_the_seg(mano_pair, examples, constants, seed):
  example = flat_example(examples['train'][4 + seed])
  example['image'] = tf.cast(example['image'], tf.uint8)
  out = augment.augment(example, tf.constant([seed, 7], tf.int64), settings.augment_config(), constants)
  assert out['image'].dtype == tf.uint8
  check_targets_match_seg(mano_pair, out)


def test_augment_is_a_function_of_the_seed(examples, constants):
  example = flat_example(examples['train'][0])
  example['image'] = tf.cast(example['image'], tf.uint8)
  config = settings.augment_config()
  first, again, other = (
      augment.augment(example, tf.constant(seed, tf.int64), config, constants) for seed in ([3, 4], [3, 4], [3, 5])
  )
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  assert not np.array_equal(first['image'], other['image'])


def test_sample_geometry_ranges_and_switches():
  config = settings.augment_config()
  samples = [augment.sample_geometry(tf.constant([i, 0], tf.int64), config) for i in range(400)]
  flips = np.array([s['flip'].numpy() for s in samples])
  angles = np.degrees([s['angle_rad'].numpy() for s in samples])
  zooms = np.array([s['zoom'].numpy() for s in samples])
  translations = np.array([s['translation_px'].numpy() for s in samples])
  assert 0.4 < flips.mean() < 0.6
  assert np.abs(angles).max() <= 180.0 and np.abs(angles).max() > 170.0
  assert zooms.min() >= 0.9 and zooms.max() <= 1.1 and np.ptp(zooms) > 0.18
  assert np.abs(translations).max() <= 10.0 and np.ptp(translations) > 18.0
  config.flip, config.rotate, config.zoom, config.translate = False, False, False, False
  fixed = augment.sample_geometry(tf.constant([0, 0], tf.int64), config)
  assert not fixed['flip'] and fixed['angle_rad'] == 0.0 and fixed['zoom'] == 1.0
  np.testing.assert_array_equal(fixed['translation_px'], [0.0, 0.0])


def test_motion_blur_kernel_is_a_normalised_line():
  horizontal = augment.motion_blur_kernel(tf.constant(5), tf.constant(0.0), 9).numpy()
  want = np.zeros((9, 9), np.float32)
  want[4, 2:7] = 0.2
  np.testing.assert_allclose(horizontal, want, atol=1e-6)
  vertical = augment.motion_blur_kernel(tf.constant(5), tf.constant(math.pi / 2), 9).numpy()
  np.testing.assert_allclose(vertical, want.T, atol=1e-6)
  diagonal = augment.motion_blur_kernel(tf.constant(8), tf.constant(0.7), 9).numpy()
  assert abs(diagonal.sum() - 1.0) < 1e-6
  np.testing.assert_allclose(diagonal, diagonal[::-1, ::-1], atol=1e-7)


def test_motion_blur_keeps_flat_images_and_spreads_a_dot():
  config = settings.augment_config()
  flat = tf.fill([32, 32, 3], 90.0)
  np.testing.assert_allclose(augment.motion_blur(flat, tf.constant([1, 2], tf.int64), config), flat, atol=1e-3)
  dot = np.zeros((32, 32, 3), np.float32)
  dot[16, 16] = 900.0
  blurred = augment.motion_blur(tf.constant(dot), tf.constant([1, 2], tf.int64), config).numpy()
  assert abs(blurred.sum() - dot.sum()) < 1e-2
  spread = np.count_nonzero(blurred[..., 0] > 1e-3)
  assert config.motion_blur_min_size_px <= spread <= 3 * config.motion_blur_max_size_px


def test_color_statistics():
  """Gains U(0.7, 1.3) per channel, offset U(-12.75, 12.75), noise sigma 2.55, as the reference."""
  config = settings.augment_config()
  image = np.full((64, 64, 3), 50.0, np.float32)
  image[32:] = 150.0
  gains, offsets, noise_std = [], [], []
  for seed in range(64):
    out = augment.color_augment(tf.constant(image), tf.constant([seed, 1], tf.int64), config).numpy()
    low, high = out[:32].mean(axis=(0, 1)), out[32:].mean(axis=(0, 1))
    gain = (high - low) / 100.0
    gains.append(gain)
    offsets.append(np.mean(low - 50.0 * gain))
    noise_std.append(np.std(out - np.where(image == 50.0, low, high)))
  gains, offsets = np.concatenate(gains), np.array(offsets)
  assert gains.min() > 0.69 and gains.max() < 1.31
  assert abs(gains.mean() - 1.0) < 0.06 and abs(gains.std() - 0.6 / math.sqrt(12)) < 0.04
  assert np.abs(offsets).max() < 12.75 + 0.3 and abs(offsets.std() - 25.5 / math.sqrt(12)) < 2.0
  assert abs(np.mean(noise_std) - 2.55) < 0.05
  np.testing.assert_array_equal(augment.to_uint8(tf.constant([-3.0, 12.4, 12.6, 300.0])), [0, 12, 13, 255])
