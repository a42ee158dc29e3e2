"""Pieces of the InterHand2.6M preprocessing: selection, camera and MANO conversion, crop math."""

import math

import numpy as np
import pytest

from data_prep.interhand26m import preprocess as pp
from dir_jax.data import schema
from dir_jax.mano import pca_to_axis_angle
from dir_jax.render import project_perspective


def _hand(rng, trans=(0.0, 0.0, 1.0)):
  return {'pose': (rng.normal(size=48) * 0.3).tolist(), 'shape': rng.normal(size=10).tolist(), 'trans': list(trans)}


def _camera_capture(cam='400002', campos_mm=(100.0, -50.0, 0.0), rotation=None):
  rotation = np.eye(3) if rotation is None else rotation
  return {
      'campos': {cam: list(campos_mm)},
      'camrot': {cam: np.asarray(rotation).tolist()},
      'focal': {cam: [1200.0, 1201.0]},
      'princpt': {cam: [255.0, 166.0]},
  }


@pytest.mark.parametrize(
    'annotation, reason',
    [
        ({'hand_type': 'interacting', 'hand_type_valid': 1}, None),
        ({'hand_type': 'interacting', 'hand_type_valid': True}, None),
        ({'hand_type': 'right', 'hand_type_valid': 1}, pp.NOT_INTERACTING),
        ({'hand_type': 'left', 'hand_type_valid': 1}, pp.NOT_INTERACTING),
        ({'hand_type': 'interacting', 'hand_type_valid': 0}, pp.HAND_TYPE_INVALID),
        ({'hand_type': 'interacting'}, pp.HAND_TYPE_INVALID),
    ],
)
def test_annotation_reason(annotation, reason):
  assert pp.annotation_reason(annotation) == reason
  assert pp.annotation_reason(annotation, 'all') is None  # the 'all' config keeps every hand type


def test_hand_sides_and_subsets():
  assert pp.hand_sides('interacting') == schema.SIDES
  assert pp.hand_sides('right') == ('right',) and pp.hand_sides('left') == ('left',)
  with pytest.raises(ValueError, match="subset must be one of .'interacting', 'all'., got 'single'"):
    pp.check_subset('single')


def test_mano_reason():
  rng = np.random.default_rng(0)
  good = {'left': _hand(rng), 'right': _hand(rng)}
  assert pp.mano_reason(good) is None
  assert pp.mano_reason(None) == pp.MANO_MISSING
  assert pp.mano_reason({'left': good['left']}) == pp.MANO_MISSING
  assert pp.mano_reason({'left': good['left'], 'right': None}) == pp.MANO_MISSING
  for broken in (
      dict(good['right'], trans=[math.nan, 0.0, 0.0]),
      dict(good['right'], pose=[0.0] * 45),
      {'pose': good['right']['pose'], 'shape': good['right']['shape']},
      dict(good['right'], shape='not numbers'),
  ):
    assert pp.mano_reason({'left': good['left'], 'right': broken}) == pp.MANO_INVALID
    assert pp.mano_reason({'left': good['left'], 'right': broken}, ('left',)) is None  # only the named hand
    assert pp.mano_reason({'left': good['left'], 'right': broken}, ('right',)) == pp.MANO_INVALID
  assert pp.mano_reason({'left': None, 'right': good['right']}, ('right',)) is None
  assert pp.mano_reason({'right': good['right']}, ('left',)) == pp.MANO_MISSING


def test_camera_from_raw_conventions():
  rng = np.random.default_rng(1)
  rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  rotation *= np.linalg.det(rotation)
  campos_mm = np.array([120.0, -340.0, 910.0])
  camera = pp.camera_from_raw(_camera_capture(campos_mm=campos_mm, rotation=rotation), '400002')
  point_world_m = rng.normal(size=3)
  np.testing.assert_allclose(
      camera['rotation'] @ point_world_m + camera['translation_m'],
      rotation @ (point_world_m - campos_mm / 1000.0),
      atol=1e-12,
  )
  # OpenCV principal point + 0.5 (pixel centres at i + 0.5).
  np.testing.assert_allclose(camera['K_px'], [[1200.0, 0.0, 255.5], [0.0, 1201.0, 166.5], [0.0, 0.0, 1.0]])


def test_camera_from_raw_missing_or_broken():
  capture = _camera_capture()
  assert pp.camera_from_raw(capture, '400099') is None
  assert pp.camera_from_raw(None, '400002') is None
  capture['focal']['400002'] = [math.nan, 1200.0]
  assert pp.camera_from_raw(capture, '400002') is None


def test_image_reason_threshold():
  assert pp.image_reason(np.full((4, 4, 3), 9, np.uint8)) == pp.IMAGE_DARK
  assert pp.image_reason(np.full((4, 4, 3), 10, np.uint8)) is None


def test_axis_angle_to_rotmat():
  axis_angle = np.array([0.3, -0.2, 0.9])
  rotmat = pp.axis_angle_to_rotmat(axis_angle)
  np.testing.assert_allclose(rotmat @ rotmat.T, np.eye(3), atol=1e-12)
  np.testing.assert_allclose(rotmat @ axis_angle, axis_angle, atol=1e-12)  # the axis stays put
  np.testing.assert_allclose(
      pp.axis_angle_to_rotmat([0.0, 0.0, np.pi / 2]) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12
  )


def test_neuralannot_pose_is_relative_to_the_mean(mano_pair):
  rng = np.random.default_rng(2)
  hand = pp.neuralannot_hand(_hand(rng))
  for side in ('left', 'right'):
    params = pp.mano_params_world(mano_pair[side], hand)
    pose_aa = np.asarray(pca_to_axis_angle(mano_pair[side], params['hand_pose'].astype(np.float32)))
    np.testing.assert_allclose(pose_aa, hand['pose'][3:] + mano_pair[side].hands_mean, atol=2e-5)


def test_world_to_camera_moves_the_vertices(mano_pair):
  rng = np.random.default_rng(3)
  hand = pp.neuralannot_hand(_hand(rng, trans=(0.05, -0.02, 1.0)))
  rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
  rotation *= np.linalg.det(rotation)
  camera = pp.camera_from_raw(_camera_capture(campos_mm=(30.0, 20.0, -50.0), rotation=rotation), '400002')
  for side in ('left', 'right'):
    verts_world_m, _ = pp.hand_mesh(mano_pair[side], pp.mano_params_world(mano_pair[side], hand))
    verts_cam_m, _ = pp.hand_mesh(mano_pair[side], pp.mano_params_camera(mano_pair[side], hand, camera))
    expected = verts_world_m.astype(np.float64) @ camera['rotation'].T + camera['translation_m']
    np.testing.assert_allclose(verts_cam_m, expected, atol=2e-6)  # float32 over ~1 m


def test_crop_affine_centres_the_box():
  points_px = np.array([[100.0, 40.0], [300.0, 90.0], [180.0, 60.0]])  # box 200 x 50, centre (200, 65)
  affine = pp.crop_affine(points_px)
  mapped = points_px @ affine[:2, :2].T + affine[:2, 2]
  np.testing.assert_allclose(affine @ [200.0, 65.0, 1.0], [128.0, 128.0, 1.0])
  # The longer side spans HAND_BBOX_RATIO of the crop: 204.8 px, x from 25.6 to 230.4.
  np.testing.assert_allclose([mapped[:, 0].min(), mapped[:, 0].max()], [25.6, 230.4])
  np.testing.assert_allclose(affine[0, 0], affine[1, 1])


def test_crop_intrinsics_match_the_affine():
  K_px = np.array([[1200.0, 0.0, 256.5], [0.0, 1190.0, 167.5], [0.0, 0.0, 1.0]])
  affine = np.array([[1.7, 0.0, -150.0], [0.0, 1.7, -90.0], [0.0, 0.0, 1.0]])
  points_cam_m = np.random.default_rng(4).normal([0.0, 0.0, 1.0], 0.1, (10, 3))
  in_image = project_perspective(points_cam_m, K_px)[:, :2]
  in_crop = project_perspective(points_cam_m, pp.crop_intrinsics(K_px, affine))[:, :2]
  np.testing.assert_allclose(in_crop, in_image @ affine[:2, :2].T + affine[:2, 2], atol=1e-9)


def test_warp_to_crop_pixel_centres():
  """One bright pixel (col 10, row 7) lands, scaled x4, where the affine sends its centre."""
  image = np.zeros((30, 40, 3), np.uint8)
  image[7, 10] = 255
  affine = np.array([[4.0, 0.0, -3.0], [0.0, 4.0, 5.0], [0.0, 0.0, 1.0]])
  crop = pp.warp_to_crop(image, affine, size=64)[..., 0].astype(np.float64)
  rows, cols = np.mgrid[0:64, 0:64]
  centroid = [(crop * (cols + 0.5)).sum() / crop.sum(), (crop * (rows + 0.5)).sum() / crop.sum()]
  np.testing.assert_allclose(centroid, affine[:2] @ [10.5, 7.5, 1.0], atol=1e-6)  # (39, 35)


def test_warp_to_crop_black_outside():
  image = np.full((20, 20, 3), 200, np.uint8)
  affine = np.array([[1.0, 0.0, 30.0], [0.0, 1.0, 30.0], [0.0, 0.0, 1.0]])  # image at 30..50
  crop = pp.warp_to_crop(image, affine, size=64)
  assert np.all(crop[:29] == 0) and np.all(crop[:, :29] == 0) and np.all(crop[51:] == 0)
  assert np.all(crop[31:49, 31:49] == 200)


def test_dense_vertex_colors(mano_pair):
  colors = pp.dense_vertex_colors(mano_pair)
  both = np.concatenate([colors['left'], colors['right']])
  np.testing.assert_allclose(both.min(axis=0), 0.0)
  np.testing.assert_allclose(both.max(axis=0), 1.0)
  assert np.median(colors['right'][:, 0]) > 0.5 > np.median(colors['left'][:, 0])


def test_convert_example_skips_hands_behind_the_camera(mano_pair):
  rng = np.random.default_rng(5)
  record = {
      'mano': {
          'left': pp.neuralannot_hand(_hand(rng, (0.03, 0.0, 1.0))),
          'right': pp.neuralannot_hand(_hand(rng, (-0.03, 0.0, 1.0))),
      },
      'camera': pp.camera_from_raw(_camera_capture(campos_mm=(0.0, 0.0, 2000.0)), '400002'),
      'image_id': 1,
      'capture': 0,
      'frame': 0,
      'camera_id': '400002',
      'hand_type': 'interacting',
  }
  image = np.full((334, 512, 3), 128, np.uint8)
  reason, example = pp.convert_example(record, image, mano_pair, pp.dense_vertex_colors(mano_pair))
  assert (reason, example) == (pp.HANDS_BEHIND_CAMERA, None)
