"""python -m dir_jax.predict: crops, the weak-perspective render camera, pictures, and runs on files.

The end-to-end run uses a randomly initialised tiny model (configs/tiny.py, 64 px input), whose
predictions are arbitrary: it checks files, formats and consistency. Whether the hands land on the
right pixels is checked with known meshes and cameras through the functions predict uses.
"""

import contextlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh
from PIL import Image

from configs import tiny
from data_prep import synthetic_mano
from dir_jax import checkpoint, predict
from dir_jax.mano import load_mano_pair, network_mano
from dir_jax.mano.constants import JOINT_NAMES_21
from dir_jax.mano.rotation import rot6d_to_matrix
from dir_jax.model.dir import placeholder_mano
from dir_jax.render import overlay
from dir_jax.render.rasterizer import project_perspective, rasterize, render_seg_dense
from dir_jax.render.stages_figure import titled_row

SIDES = ('left', 'right')
# Two hands seen from the front, fingers up; wrists low in the crop, overlapping in the middle.
SCENE = {
    'camera_left': np.array([6.0, -0.12, 0.45]),
    'camera_right': np.array([6.6, 0.1, 0.5]),
    'offset': np.array([0.8, 0.1, -0.2]),
}


def _rotation_6d(turn_rad, lean_rad):
  """6D (first two columns) of R = Rz(turn) Rx(90 deg) Ry(lean)."""

  def about(axis, angle):
    i, j = [k for k in range(3) if k != axis]
    rot = np.eye(3)
    rot[i, i] = rot[j, j] = np.cos(angle)
    rot[j, i], rot[i, j] = np.sin(angle), -np.sin(angle)
    return rot

  rot = about(2, turn_rad) @ about(0, np.pi / 2) @ about(1, lean_rad)
  return np.concatenate([rot[:, 0], rot[:, 1]])


@pytest.fixture(scope='module')
def mano_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp('mano'))
  synthetic_mano.write_all(folder, 0)
  return folder


@pytest.fixture(scope='module')
def hands(mano_dir):
  """Wrist-centred posed synthetic hands: {'mesh_xyz_<side>': (778, 3) m, 'faces': {side: (1538, 3)}}."""
  mano = load_mano_pair(mano_dir)
  # The canonical fingers point along +x (right) / -x (left), palms to -y: turn the palms to the camera
  # (-z) and the fingers up the image (-y), leaning 17 degrees out of the image plane, flexed a little.
  poses = {'left': (np.pi / 2, 0.3, 1.0), 'right': (-np.pi / 2, -0.3, -0.4)}
  out = {'faces': {side: np.asarray(mano[side].faces, np.int64) for side in SIDES}}
  for side, (turn, lean, flex) in poses.items():
    pose = np.zeros((1, 51), np.float32)
    pose[0, :6] = _rotation_6d(turn, lean)
    pose[0, 6] = flex
    verts, _ = network_mano(mano[side], jnp.asarray(pose), jnp.zeros((1, 10)), center_idx=0)
    out[f'mesh_xyz_{side}'] = np.asarray(verts[0], np.float64)
  return out


def _stage(hands, **overrides):
  stage = {key: hands[key] for key in ('mesh_xyz_left', 'mesh_xyz_right')}
  stage.update(SCENE)
  stage.update(overrides)
  return stage


# ------------------------------------------------------------------------------------------------
# Render camera


@pytest.mark.parametrize('size_px', [64, 256])
@pytest.mark.parametrize(
    'cameras',
    [
        {},  # the scene above
        {'camera_left': np.array([-6.0, 0.1, -0.4])},  # a hand upside down (s < 0)
        {'camera_left': np.array([12.0, 0.0, 0.0]), 'camera_right': np.array([3.0, 0.3, 0.3])},  # 4x apart
    ],
)
def test_render_camera_reproduces_the_weak_perspective_projection(hands, size_px, cameras):
  stage = _stage(hands, **cameras)
  verts_cam_m, K, placement = predict.stage_scene(stage, size_px)
  for side in SIDES:
    s, tu, tv = stage[f'camera_{side}']
    mesh_m = stage[f'mesh_xyz_{side}']
    expected_px = predict.uv_to_px(s * mesh_m[:, :2] + [tu, tv], size_px)
    got_px = project_perspective(verts_cam_m[side], K)[:, :2]
    # The error bounds of the module docstring: the distance from the crop centre times
    # |kappa z| / (Z - |kappa z|), at most W |s z| / 400 px inside the crop.
    kappa, depth_m = placement[side]['scale'], placement[side]['translation_m'][2]
    bound_px = (
        np.abs(expected_px - size_px / 2).max(axis=1)
        * np.abs(kappa * mesh_m[:, 2])
        / (depth_m - np.abs(kappa * mesh_m[:, 2]))
    )
    error_px = np.abs(got_px - expected_px).max(axis=1)
    assert np.all(error_px <= bound_px + 1e-9)
    in_crop = np.all((expected_px >= 0) & (expected_px <= size_px), axis=1)
    assert error_px[in_crop].max() <= size_px * abs(s) * np.abs(mesh_m[:, 2]).max() / 400 * 1.001 < 1.0
    # The root projects exactly.
    np.testing.assert_allclose(
        project_perspective(placement[side]['translation_m'][None], K)[0, :2],
        predict.uv_to_px(np.array([tu, tv]), size_px),
        atol=1e-9,
    )
  gap_m = placement['right']['translation_m'][2] - placement['left']['translation_m'][2]
  np.testing.assert_allclose(gap_m, 0.15 * stage['offset'][2], rtol=1e-12)


def test_render_camera_survives_a_zero_scale(hands):
  # A random network's initial stage predicts s = 0: the hand collapses to a point, nothing breaks.
  stage = _stage(hands, camera_left=np.zeros(3), camera_right=np.zeros(3))
  verts_cam_m, K, _ = predict.stage_scene(stage, 64)
  assert all(np.all(np.isfinite(v)) and np.all(v[:, 2] > 0) for v in verts_cam_m.values())
  picture = predict.render_hands(np.full((64, 64, 3), 200, np.uint8), stage, hands['faces'])
  assert np.all(picture == 200)


# ------------------------------------------------------------------------------------------------
# Overlay pictures with known meshes and cameras


def _seg(stage, faces, size_px, sides=SIDES):
  """Label map (1 left, 2 right, 0 none) of the scene rendered from the same camera construction."""
  verts_cam_m, K, _ = predict.stage_scene(stage, size_px)
  meshes = [(verts_cam_m[side], faces[side], 1 + SIDES.index(side), np.zeros((778, 3))) for side in sides]
  return render_seg_dense(meshes, K, size_px, size_px)[0]


def _colour_masks(picture):
  picture = picture.astype(int)
  return picture[..., 2] > picture[..., 0] + 20, picture[..., 0] > picture[..., 2] + 20  # left blue, right orange


@pytest.mark.parametrize('offset_z', [-0.2, 0.2])
def test_overlay_pixels_are_each_hands_mask_with_the_nearer_hand_on_top(hands, offset_z):
  size_px = 128
  stage = _stage(hands, offset=np.array([0.8, 0.1, offset_z]))
  # Background values above every shaded value, so every covered pixel changes.
  background = np.random.default_rng(0).integers(245, 256, (size_px, size_px, 3)).astype(np.uint8)
  picture = predict.render_hands(background, stage, hands['faces'])
  seg = _seg(stage, hands['faces'], size_px)
  left_px, right_px = _colour_masks(picture)
  np.testing.assert_array_equal((picture != background).any(axis=-1), seg > 0)
  np.testing.assert_array_equal(left_px, seg == 1)
  np.testing.assert_array_equal(right_px, seg == 2)
  # Where the hands overlap in the image, the one the offset puts nearer the camera is seen.
  overlap = (_seg(stage, hands['faces'], size_px, ['left']) > 0) & (_seg(stage, hands['faces'], size_px, ['right']) > 0)
  assert overlap.sum() > 50
  nearer_px = right_px if offset_z < 0 else left_px  # offset = right root - left root; z forward
  assert nearer_px[overlap].mean() > 0.9


@pytest.mark.parametrize('side', SIDES)
def test_overlay_hands_cover_their_weak_perspective_silhouettes(hands, side):
  # The silhouette through the render camera is the one of the network's own projection s * xyz + t
  # (rasterised orthographically), up to boundary pixels.
  size_px = 256
  stage = _stage(hands)
  seg = _seg(stage, hands['faces'], size_px, [side])
  s, tu, tv = stage[f'camera_{side}']
  mesh_m = hands[f'mesh_xyz_{side}']
  weak_px_depth = np.concatenate([predict.uv_to_px(s * mesh_m[:, :2] + [tu, tv], size_px), mesh_m[:, 2:] + 1], axis=1)
  weak = rasterize(weak_px_depth, hands['faces'][side], size_px, size_px, perspective_correct=False).mask
  assert weak.sum() > 2000
  assert (weak != (seg > 0)).sum() <= 0.005 * weak.sum()


# ------------------------------------------------------------------------------------------------
# Crops, inputs, arguments


def test_whole_image_is_padded_to_a_centred_square():
  image = np.random.default_rng(1).integers(0, 256, (32, 64, 3)).astype(np.uint8)
  square = predict.crop_square(64, 32)
  assert square.box_px == (0.0, -16.0, 64.0, 48.0)
  crop = predict.crop_image(image, square, 64)
  np.testing.assert_array_equal(crop[16:48], image)
  assert not crop[:16].any() and not crop[48:].any()


def test_bbox_crop_is_a_square_the_box_fills_to_80_percent():
  square = predict.crop_square(100, 80, (10, 20, 50, 40))
  assert square.box_px == pytest.approx((5.0, 5.0, 55.0, 55.0))
  affine = square.image_to_crop(100)
  np.testing.assert_allclose(affine @ [5, 5, 1], [0, 0])
  np.testing.assert_allclose(affine @ [55, 55, 1], [100, 100])
  points = np.array([[3.0, 7.5], [60.0, 0.0]])
  np.testing.assert_allclose(square.crop_to_image(points @ affine[:, :2].T + affine[:, 2], 100), points)
  # Pixel convention: image pixel (30, 40) covers [30, 31) x [40, 41), i.e. crop [50, 52) x [70, 72).
  image = np.zeros((80, 100, 3), np.uint8)
  image[40, 30] = 255
  crop = predict.crop_image(image, square, 100).astype(float)[..., 0]
  rows, cols = np.mgrid[:100, :100] + 0.5
  centroid = [(crop * cols).sum() / crop.sum(), (crop * rows).sum() / crop.sum()]
  np.testing.assert_allclose(centroid, [51.0, 71.0], atol=0.05)


def test_bbox_outside_the_image_is_an_input_error():
  with pytest.raises(predict.ImageInputError, match='outside the 100x80 image'):
    predict.crop_square(100, 80, (120, 0, 150, 30))


def test_bbox_argument_is_validated(capsys):
  with pytest.raises(SystemExit):
    predict.parse_args(['predict', '--checkpoint', 'c', '--images', 'i', '--out', 'o', '--bbox', '10,10,5,20'])
  assert 'x0 < x1' in capsys.readouterr().err


def test_images_are_listed_from_files_folders_and_globs(tmp_path):
  for name in ('b.png', 'a.JPG', 'c.jpeg', 'notes.txt'):
    (tmp_path / name).write_bytes(b'')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'a.png').write_bytes(b'')
  expected = [str(tmp_path / n) for n in ('a.JPG', 'b.png', 'c.jpeg')]
  assert predict.list_images(str(tmp_path)) == expected
  assert predict.list_images(str(tmp_path / 'notes.txt')) == [str(tmp_path / 'notes.txt')]
  found = predict.list_images(str(tmp_path / '**' / 'a.*'))
  assert sorted(found) == [str(tmp_path / 'a.JPG'), str(tmp_path / 'sub' / 'a.png')]
  assert predict.output_names(found) == ['a', 'a_2']
  with pytest.raises(predict.SetupError, match='no images found'):
    predict.list_images(str(tmp_path / 'missing' / '*.jpg'))


# ------------------------------------------------------------------------------------------------
# End to end with a random tiny model


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory, mano_dir):
  """A random tiny model as train.py writes it (step 0, remembering `mano_dir` and its 64 px input)."""
  model = checkpoint.model_from_config(tiny.get_config().model)
  key = jax.random.key(0, impl='unsafe_rbg')  # compiles in half the time of threefry on CPU
  variables = jax.jit(lambda x: model.init(key, x, placeholder_mano()))(jnp.zeros((1, 64, 64, 3)))
  return checkpoint.save_variables(
      str(tmp_path_factory.mktemp('ckpt')), variables, model, training=checkpoint.training_facts(mano_dir, 64)
  )


def _copy_checkpoint(source, directory, training=None):
  """`source` written again to `directory`, remembering `training` (None: nothing, as older checkpoints)."""
  model, variables, _ = checkpoint.restore_variables(source)
  return checkpoint.save_variables(str(directory), variables, model, training=training)


def test_predictor_outputs_drawn_by_the_render_camera_land_on_mesh_uv(tiny_checkpoint, mano_dir, hands):
  model, variables, _ = checkpoint.restore_variables(tiny_checkpoint)
  predictor = predict.Predictor(model, variables, load_mano_pair(mano_dir), batch_size=2)
  crop = predict.render_hands(np.full((64, 64, 3), 120, np.uint8), _stage(hands), hands['faces'])
  (alone,) = predictor([crop])
  paired = predictor([crop, crop[::-1]])
  assert predictor.images == 3 and len(alone) == len(model.config.stages) + 1
  for stage, stage_in_pair in zip(alone, paired[0]):  # zero padding does not change a prediction
    for key, value in stage.items():
      np.testing.assert_allclose(value, stage_in_pair[key], atol=1e-5, err_msg=key)
  for stage in alone[1:]:  # stage 0 of a random network may have s = 0
    verts_cam_m, K, _ = predict.stage_scene(stage, 256)
    for side in SIDES:
      np.testing.assert_allclose(
          stage[f'root_rotmat_{side}'], rot6d_to_matrix(stage[f'mano_para_{side}'][:6]), atol=1e-6
      )
      uv_px = predict.uv_to_px(stage[f'mesh_uv_{side}'], 256)
      in_crop = np.all((uv_px >= 0) & (uv_px <= 256), axis=1)
      error_px = np.abs(project_perspective(verts_cam_m[side], K)[:, :2] - uv_px).max(axis=1)
      assert error_px[in_crop].max(initial=0.0) < 1.0 and error_px.max() < 5.0


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory, hands):
  """Two pictures of the synthetic hands (PNG, JPEG) of different sizes, a corrupt file, a tiny image."""
  folder = tmp_path_factory.mktemp('images')
  for name, (width, height) in (('hands_a.png', (120, 90)), ('hands_b.jpg', (80, 100))):
    side_px = max(width, height)
    crop = np.full((side_px, side_px, 3), 90, np.uint8)
    crop[:, :, 1] = np.linspace(60, 160, side_px).astype(np.uint8)
    picture = predict.render_hands(crop, _stage(hands), hands['faces'])
    top, left = (side_px - height) // 2, (side_px - width) // 2
    Image.fromarray(picture[top : top + height, left : left + width]).save(folder / name)
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / 'tiny.png')
  return folder


@pytest.fixture(scope='module')
def run(tiny_checkpoint, image_folder, tmp_path_factory, restore_compilation_cache_options):
  """predict on `image_folder` with the step folder of `tiny_checkpoint`, without --mano_dir."""
  out = tmp_path_factory.mktemp('predictions')
  cache_dir = str(tmp_path_factory.mktemp('jax_cache'))
  argv = [
      'predict',
      '--checkpoint',
      os.path.join(tiny_checkpoint, '0'),
      '--images',
      str(image_folder),
      '--out',
      str(out),
      '--batch_size',
      '3',
      '--render_size',
      '96',
      '--compilation_cache',
      cache_dir,
  ]
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    status = predict.main(argv)
  return {'status': status, 'out': out, 'stdout': stdout.getvalue(), 'stderr': stderr.getvalue(), 'cache': cache_dir}


def test_bad_images_are_reported_and_the_others_processed(run, capsys):
  assert run['status'] == 1
  assert '2 of 4 images succeeded, 2 failed' in run['stdout']
  assert 'images/s' in run['stdout'] and 'compilation' in run['stdout']
  assert 'broken.jpg: cannot read the image' in run['stderr']
  assert 'tiny.png: the image is 16x16 px, smaller than 32 px' in run['stderr']
  assert sorted(os.listdir(run['out'])) == ['hands_a', 'hands_b']


def test_the_run_says_which_checkpoint_mano_and_cache_it_used(run, tiny_checkpoint, mano_dir):
  lines = run['stdout'].splitlines()
  assert f'checkpoint: step 0 of {tiny_checkpoint} (step folder {os.path.join(tiny_checkpoint, "0")})' in lines
  assert f'MANO: {mano_dir} (remembered by the checkpoint, as --mano_dir was not given)' in lines
  compiled = [line for line in lines if line.startswith('compiled the network for batches of 3 in ')]
  assert compiled and compiled[0].endswith(f' s (persistent compilation cache: {run["cache"]})')
  assert jax.config.jax_compilation_cache_dir == run['cache']


@pytest.mark.parametrize('name', ['hands_a', 'hands_b'])
def test_outputs_are_written_and_consistent(run, mano_dir, name):
  folder = run['out'] / name
  assert sorted(os.listdir(folder)) == [
      'hands.ply',
      'left.obj',
      'overlay.png',
      'prediction.json',
      'right.obj',
      'side.png',
      'stages.png',
  ]
  mano = load_mano_pair(mano_dir)
  record = json.loads((folder / 'prediction.json').read_text())
  assert record['joint_names'] == list(JOINT_NAMES_21) and record['center_joint'] == 'wrist'
  assert record['stage'] == 2 and record['crop']['network_input_px'] == 64
  size_px = record['render_camera']['size_px']
  assert size_px == 96

  meshes = {}
  for side in SIDES:
    hand = record[side]
    for key, shape in (
        ('root_6d', (6,)),
        ('root_rotmat', (3, 3)),
        ('pose_pca', (45,)),
        ('betas', (10,)),
        ('camera', (3,)),
    ):
      assert np.shape(hand['mano'][key]) == shape and np.all(np.isfinite(hand['mano'][key]))
    mesh = trimesh.load(folder / f'{side}.obj', process=False)
    assert mesh.vertices.shape == (778, 3)
    np.testing.assert_array_equal(mesh.faces, mano[side].faces)
    meshes[side] = np.asarray(mesh.vertices)
    # The MANO parameters pose the written mesh and joints (json rounds to 1e-6).
    pose = np.concatenate([hand['mano']['root_6d'], hand['mano']['pose_pca']])[None].astype(np.float32)
    verts, joints = network_mano(mano[side], jnp.asarray(pose), jnp.asarray([hand['mano']['betas']], jnp.float32))
    np.testing.assert_allclose(verts[0], meshes[side], atol=2e-5)
    np.testing.assert_allclose(joints[0], hand['joints_3d_m'], atol=2e-5)
    np.testing.assert_allclose(
        rot6d_to_matrix(jnp.asarray(hand['mano']['root_6d'])), hand['mano']['root_rotmat'], atol=2e-5
    )
    # 2D joints: the weak-perspective projection, in crop pixels and back in image pixels.
    s, tu, tv = hand['mano']['camera']
    uv = s * np.asarray(hand['joints_3d_m'])[:, :2] + [tu, tv]
    np.testing.assert_allclose(hand['joints_uv'], uv, atol=1e-4)
    np.testing.assert_allclose(hand['joints_2d_crop_px'], (uv + 1) * size_px / 2, atol=1e-2)
    x0, y0, x1, _ = record['crop']['box_px']
    np.testing.assert_allclose(
        hand['joints_2d_image_px'], np.asarray(hand['joints_2d_crop_px']) * (x1 - x0) / size_px + [x0, y0], atol=1e-3
    )

  offset_m = np.asarray(record['offset_m'])
  ply = trimesh.load(folder / 'hands.ply', process=False)
  np.testing.assert_allclose(ply.vertices[:778], meshes['left'], atol=1e-6)
  np.testing.assert_allclose(ply.vertices[778:], meshes['right'] + offset_m, atol=2e-6)
  np.testing.assert_array_equal(ply.faces, np.concatenate([mano.left.faces, mano.right.faces + 778]))
  np.testing.assert_array_equal(ply.visual.vertex_colors[0, :3], np.round(np.array(overlay.LEFT_HAND_RGB) * 255))
  np.testing.assert_array_equal(ply.visual.vertex_colors[778, :3], np.round(np.array(overlay.RIGHT_HAND_RGB) * 255))

  # The crop recorded in the json, the overlay drawn on it, the hands where the camera puts them.
  image = predict.load_image(record['image']['path'])
  assert record['image']['size_px'] == [image.shape[1], image.shape[0]]
  square = predict.crop_square(image.shape[1], image.shape[0])
  assert record['crop']['box_px'] == pytest.approx(square.box_px)
  crop = predict.crop_image(image, square, size_px)
  picture = np.asarray(Image.open(folder / 'overlay.png'))
  stage = {
      'mesh_xyz_left': meshes['left'],
      'mesh_xyz_right': meshes['right'],
      'offset': offset_m / 0.15,
      'camera_left': np.asarray(record['left']['mano']['camera']),
      'camera_right': np.asarray(record['right']['mano']['camera']),
  }
  # Json and OBJ round the values: a few boundary pixels may differ.
  assert (picture != predict.render_hands(crop, stage, {s: mano[s].faces for s in SIDES})).any(axis=-1).mean() < 0.01
  verts_cam_m, K, placement = predict.stage_scene(stage, size_px)
  for side in SIDES:
    np.testing.assert_allclose(
        record[side]['render_placement']['translation_m'], placement[side]['translation_m'], rtol=1e-4, atol=1e-5
    )  # from the json's rounded camera
    s, tu, tv = stage[f'camera_{side}']
    expected_px = predict.uv_to_px(s * meshes[side][:, :2] + [tu, tv], size_px)
    np.testing.assert_allclose(project_perspective(verts_cam_m[side], K)[:, :2], expected_px, atol=1.0)
  np.testing.assert_allclose(record['render_camera']['K_px'], K)

  stages = np.asarray(Image.open(folder / 'stages.png'))
  titles = ['initial', 'stage 1 (4x4)', 'stage 2 (8x8)']
  assert stages.shape == titled_row([picture] * 3, titles).shape
  side = np.asarray(Image.open(folder / 'side.png'))
  assert side.shape == (96, 96, 3) and (side != 255).any()


def _main_status(argv, capsys):
  """predict.main's exit status and stderr for the flags `argv`."""
  status = predict.main(['predict', *argv])
  return status, capsys.readouterr().err


@pytest.mark.parametrize('problem', ['missing', 'empty'])
def test_missing_checkpoint_is_a_clear_error(tmp_path, image_folder, mano_dir, capsys, problem):
  folder = tmp_path / 'no_checkpoint'
  if problem == 'empty':
    folder.mkdir()
  status, err = _main_status(
      [
          '--checkpoint',
          str(folder),
          '--images',
          str(image_folder),
          '--out',
          str(tmp_path / 'out'),
          '--mano_dir',
          mano_dir,
      ],
      capsys,
  )
  assert status == 2
  assert str(folder) in err and 'train.py' in err and 'export_orbax' in err
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('problem', ['missing', 'corrupt'])
def test_missing_or_wrong_mano_is_a_clear_error(tmp_path, image_folder, tiny_checkpoint, capsys, problem):
  mano_dir = tmp_path / 'mano'
  if problem == 'corrupt':
    mano_dir.mkdir()
    for side in ('LEFT', 'RIGHT'):
      (mano_dir / f'MANO_{side}.pkl').write_bytes(b'\x80\x04 truncated')
  status, err = _main_status(
      [
          '--checkpoint',
          tiny_checkpoint,
          '--images',
          str(image_folder),
          '--out',
          str(tmp_path / 'out'),
          '--mano_dir',
          str(mano_dir),
      ],
      capsys,
  )
  assert status == 2
  assert str(mano_dir) in err and 'https://mano.is.tue.mpg.de' in err


def test_a_remembered_mano_folder_that_is_gone_asks_for_mano_dir(tmp_path, image_folder, tiny_checkpoint, capsys):
  gone = str(tmp_path / 'moved_mano')
  moved = _copy_checkpoint(tiny_checkpoint, tmp_path / 'ckpt', checkpoint.training_facts(gone, 64))
  status, err = _main_status(
      ['--checkpoint', moved, '--images', str(image_folder), '--out', str(tmp_path / 'out')], capsys
  )
  assert status == 2
  assert gone in err and 'no longer exists' in err and 'give --mano_dir' in err


def test_without_mano_dir_or_a_remembered_folder_the_default_is_named(
    tmp_path, image_folder, tiny_checkpoint, capsys, monkeypatch
):
  older = _copy_checkpoint(tiny_checkpoint, tmp_path / 'ckpt')
  monkeypatch.chdir(tmp_path)  # no ./mano here
  status, err = _main_status(
      ['--checkpoint', older, '--images', str(image_folder), '--out', str(tmp_path / 'out')], capsys
  )
  assert status == 2
  assert "cannot load MANO from 'mano' (the default: --mano_dir not given and the checkpoint remembers none)" in err


def test_no_images_is_a_clear_error(tmp_path, tiny_checkpoint, mano_dir, capsys):
  status, err = _main_status(
      [
          '--checkpoint',
          tiny_checkpoint,
          '--images',
          str(tmp_path / '*.png'),
          '--out',
          str(tmp_path / 'out'),
          '--mano_dir',
          mano_dir,
      ],
      capsys,
  )
  assert status == 2 and 'no images found' in err


@pytest.mark.parametrize(
    'box',
    [
        (0, 0, float('inf'), float('inf')),
        (0, 0, 1e12, 1e12),
        (0, 0, 20000, 20000),
        (float('nan'), 0, 10, 10),
        (10, 10, 5, 20),
    ],
)
def test_unusable_bbox_is_a_per_image_error_not_a_crash(box):
  with pytest.raises(predict.ImageInputError, match='--bbox'):
    predict.crop_square(512, 334, box)


def test_bbox_argument_must_be_finite(capsys):
  with pytest.raises(SystemExit):
    predict.parse_args(['predict', '--checkpoint', 'c', '--images', 'i', '--out', 'o', '--bbox', '0,0,inf,inf'])
  assert 'finite' in capsys.readouterr().err


def test_box_larger_than_the_image_within_the_bound_is_cropped_with_black():
  image = np.full((40, 60, 3), 200, np.uint8)
  square = predict.crop_square(60, 40, (-30, -30, 90, 70))  # 2x the image's longer side
  crop = predict.crop_image(image, square, 64)
  assert crop.shape == (64, 64, 3) and crop[32, 32, 0] == 200 and crop[0, 0, 0] == 0


def test_sixteen_bit_png_named_jpg_reads_as_its_picture(tmp_path):
  gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (48, 1))
  path = tmp_path / 'scan.jpg'
  Image.fromarray(gradient).save(path, format='PNG')
  rgb = predict.load_image(str(path))
  np.testing.assert_array_equal(rgb[..., 0], np.round(gradient / 257).astype(np.uint8))
  assert rgb[:, 0].max() == 0 and rgb[:, -1].min() == 255
