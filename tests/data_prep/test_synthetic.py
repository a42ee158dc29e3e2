"""The synthetic InterHand2.6M generator: deterministic, raw layout, files that agree with each other."""

import dataclasses
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from data_prep import synthetic
from data_prep.interhand26m import preprocess as pp
from data_prep.interhand26m import raw
from dir_jax import cli
from dir_jax.data import schema
from dir_jax.render import project_perspective, rasterize
from tests.data_prep.conftest import SEED


def _files(folder):
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def _load(raw_dir, split, kind):
  with open(raw.annotation_path(raw_dir, split, kind), encoding='utf-8') as f:
    return json.load(f)


def test_same_arguments_same_bytes(synthetic_raw, synthetic_raw_again):
  first, second = _files(synthetic_raw[0]), _files(synthetic_raw_again[0])
  assert sorted(first) == sorted(second)
  assert [name for name in first if first[name] != second[name]] == []
  assert synthetic_raw[1] == synthetic_raw_again[1]


def test_another_seed_differs(synthetic_raw, mano_pair, tmp_path):
  synthetic.write_split(str(tmp_path), 'test', 2, mano_pair, seed=SEED + 1)
  assert _load(str(tmp_path), 'test', 'data') != _load(synthetic_raw[0], 'test', 'data')


def test_layout_and_counts(synthetic_raw):
  raw_dir, summary = synthetic_raw
  assert sorted(summary) == ['test', 'train']
  assert not raw.has_split(raw_dir, 'val') and not os.path.exists(os.path.join(raw_dir, 'images', 'val'))
  for split, counts in summary.items():
    assert counts['annotations'] == counts['kept'] + len(synthetic.BROKEN_ENTRIES)
    assert sum(counts['skipped'].values()) == len(synthetic.BROKEN_ENTRIES)
    data = _load(raw_dir, split, 'data')
    assert len(data['annotations']) == len(data['images']) == counts['annotations']
    assert [a['image_id'] for a in data['annotations']] == [i['id'] for i in data['images']]
    missing, corrupt, sizes = 0, 0, set()
    for image in data['images']:
      assert image['file_name'] == (
          f'Capture{image["capture"]}/{image["seq_name"]}/cam{image["camera"]}/' f'image{image["frame_idx"]}.jpg'
      )
      path = raw.image_path(raw_dir, split, image['file_name'])
      if not os.path.exists(path):
        missing += 1
        continue
      try:
        with Image.open(path) as decoded:
          decoded.load()
          assert decoded.size == (image['width'], image['height'])
          sizes.add(decoded.size)
      except OSError:
        corrupt += 1
    assert (missing, corrupt) == (1, 1)
    assert sizes == {(512, 334), (334, 512)}
    hand_types = [a['hand_type'] for a in data['annotations']]
    assert sorted(set(hand_types)) == ['interacting', 'left', 'right']


def test_files_agree_with_the_mano_parameters(synthetic_raw, mano_pair):
  """joint_3d and the bboxes follow from NeuralAnnot and camera.json read the builder's way."""
  raw_dir, _ = synthetic_raw
  interhand_order = list(schema.INTERHAND_FROM_DIR)
  for split in ('train', 'test'):
    mano, joints_3d = _load(raw_dir, split, 'MANO_NeuralAnnot'), _load(raw_dir, split, 'joint_3d')
    cameras, data = _load(raw_dir, split, 'camera'), _load(raw_dir, split, 'data')
    joints_world_m = {}
    for capture, frames in mano.items():
      for frame, hands in frames.items():
        for offset, side in ((0, 'right'), (21, 'left')):
          hand = pp.neuralannot_hand(hands[side])
          if hand is None:
            continue
          _, joints = pp.hand_mesh(mano_pair[side], pp.mano_params_world(mano_pair[side], hand))
          joints_world_m[capture, frame, side] = joints
          np.testing.assert_allclose(
              np.asarray(joints_3d[capture][frame]['world_coord'])[offset : offset + 21],
              joints[interhand_order] * 1000.0,
              atol=0.05,
          )
    checked = 0
    for image, annotation in zip(data['images'], data['annotations']):
      capture, frame = str(image['capture']), str(image['frame_idx'])
      camera = pp.camera_from_raw(cameras[capture], image['camera'])
      sides = [s for s in ('right', 'left') if (capture, frame, s) in joints_world_m]
      if camera is None or len(sides) != 2:
        continue
      joints_cam_m = np.concatenate([joints_world_m[capture, frame, s] for s in sides]).astype(np.float64)
      joints_cam_m = joints_cam_m @ camera['rotation'].T + camera['translation_m']
      K_opencv = camera['K_px'] - np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
      xy_opencv = joints_cam_m[:, :2] / joints_cam_m[:, 2:] @ K_opencv[:2, :2].T + K_opencv[:2, 2]
      lo, hi = xy_opencv.min(axis=0), xy_opencv.max(axis=0)
      np.testing.assert_allclose(annotation['bbox'], np.concatenate([lo, hi - lo]), atol=0.02)
      checked += 1
    assert checked >= 4


# ---------------------------------------------------------------------------------------------------
# The 'capture' rig (the default) and the 'frontal' rig (the demo's)

DARK_BACKGROUND_MEAN = 20.0  # the frontal rig's backgrounds average ~130, the studio's ~7


def _view_directions(camera_capture):
  """{camera id: unit direction from the hands to the camera} (minus each camera's optical axis)."""
  return {cam: -np.asarray(rot, np.float64)[2] for cam, rot in camera_capture['camrot'].items()}


def _azimuths_deg(directions):
  """Azimuths about the vertical (world -y), 0 = world -z (the frontal rig's axis)."""
  return np.array([np.degrees(np.arctan2(d[0], -d[2])) % 360.0 for d in directions])


def _circular_range_deg(azimuths_deg):
  """The smallest arc holding every azimuth: 360 minus the largest gap between neighbours."""
  a = np.sort(np.mod(azimuths_deg, 360.0))
  return 360.0 - np.max(np.diff(np.concatenate([a, [a[0] + 360.0]])))


def _hand_mask(raw_dir, split, image, mano_pair, grow_px=3):
  """(H, W) bool: pixels the two hands cover in an image, grown by `grow_px` (JPEG ringing)."""
  cameras, mano = _load(raw_dir, split, 'camera'), _load(raw_dir, split, 'MANO_NeuralAnnot')
  camera = pp.camera_from_raw(cameras[str(image['capture'])], image['camera'])
  hands = mano[str(image['capture'])][str(image['frame_idx'])]
  mask = np.zeros((image['height'], image['width']), bool)
  for side in ('right', 'left'):
    verts_world_m, _ = synthetic.hand_mesh_world(mano_pair[side], hands[side])
    verts_cam_m = verts_world_m @ camera['rotation'].T + camera['translation_m']
    mask |= rasterize(
        project_perspective(verts_cam_m, camera['K_px']),
        np.asarray(mano_pair[side].faces),
        image['height'],
        image['width'],
    ).mask
  for _ in range(grow_px):
    padded = np.pad(mask, 1)
    mask = mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
  return mask


def _kept_images(local_build, raw_dir, split):
  """data.json image entries of the examples the builder kept."""
  kept = {int(ex['image_id']) for ex in tfds.as_numpy(local_build.as_dataset(split=split))}
  return [image for image in _load(raw_dir, split, 'data')['images'] if image['id'] in kept]


def test_capture_rig_cameras_surround_the_hands():
  """Many captures of the default rig: 3 of 4 listed cameras portrait, one grey, all around."""
  rng = np.random.default_rng(0)
  ranges, elevations = [], []
  for capture in range(50):
    center_m = np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.05, 3)
    cameras = synthetic.make_cameras(rng, capture, center_m)
    listed = cameras[: synthetic.VIEWS_PER_FRAME]
    assert len(cameras) == synthetic.VIEWS_PER_FRAME + 1
    assert sum(c.height > c.width for c in listed) == 3 and all(c.width * c.height == 512 * 334 for c in cameras)
    assert [c.grey for c in cameras] == [False, True, False, False, False]
    directions = [(c.campos_m - center_m) / np.linalg.norm(c.campos_m - center_m) for c in listed]
    for c, d in zip(listed, directions):
      assert 1.0 - 0.02 <= np.linalg.norm(c.campos_m - center_m) <= 1.3 + 0.02
      assert c.rotation[2] @ -d > np.cos(np.radians(3.0))  # aimed at the hands (within ~1 cm at 1 m)
      np.testing.assert_allclose(c.rotation @ c.rotation.T, np.eye(3), atol=1e-12)
    ranges.append(_circular_range_deg(_azimuths_deg(directions)))
    elevations += [np.degrees(np.arcsin(-d[1])) for d in directions]
  assert min(ranges) > 200.0  # never all on one side (the frontal rig: within 40 degrees of -z)
  assert -30.0 - 1e-9 <= min(elevations) < -20.0 and 50.0 < max(elevations) <= 60.0 + 1e-9


def test_capture_rig_files(synthetic_raw, local_build, mano_pair):
  """The default generate(): cameras around the hands, portrait majority, a grey camera whose
  single-channel JPEGs the builder turns into grey RGB examples, dark backgrounds, lit hands."""
  raw_dir, _ = synthetic_raw
  grey_camera = {}
  for split in ('train', 'test'):
    data, cameras = _load(raw_dir, split, 'data'), _load(raw_dir, split, 'camera')
    for camera_capture in cameras.values():
      assert len(camera_capture['camrot']) == synthetic.VIEWS_PER_FRAME
      assert _circular_range_deg(_azimuths_deg(_view_directions(camera_capture).values())) > 180.0
    sizes, modes, means = {}, {}, {}
    for image in data['images']:
      path = raw.image_path(raw_dir, split, image['file_name'])
      try:
        with Image.open(path) as decoded:
          decoded.load()
          modes.setdefault(image['camera'], set()).add(decoded.mode)
          means[image['id']] = float(np.mean(np.asarray(decoded.convert('RGB'))))
      except OSError:  # the missing and the truncated file
        pass
      sizes[image['camera']] = (image['width'], image['height'])
    listed = [cam for cam in sizes if any(cam in c['camrot'] for c in cameras.values())]
    assert sum(sizes[cam] == (334, 512) for cam in listed) > len(listed) / 2  # mostly portrait
    grey = [cam for cam, m in modes.items() if m == {'L'}]
    assert len(grey) == 1 and all(m == {'RGB'} for cam, m in modes.items() if cam not in grey)
    grey_camera[split] = grey[0]
    # Brightness: every kept view >= 10 (image_dark), the planted dark view below, backgrounds dark.
    kept = _kept_images(local_build, raw_dir, split)
    assert {image['camera'] for image in kept} >= set(grey)  # the grey camera's views are kept
    assert min(means[image['id']] for image in kept) >= pp.MIN_MEAN_INTENSITY
    assert sorted(means.values())[0] < pp.MIN_MEAN_INTENSITY <= sorted(means.values())[1]
    background, hands = [], []
    for image in kept:
      with Image.open(raw.image_path(raw_dir, split, image['file_name'])) as decoded:
        pixels = np.asarray(decoded.convert('RGB'), np.float64).mean(-1)
      mask = _hand_mask(raw_dir, split, image, mano_pair)
      background.append(pixels[~mask].mean())
      hands.append(pixels[_hand_mask(raw_dir, split, image, mano_pair, grow_px=0)].mean())
    assert max(background) < DARK_BACKGROUND_MEAN and np.mean(background) < 15.0, background
    assert min(hands) > 60.0, hands  # lit hands: skin (>= 0.42) x shading (>= 0.4) x 255
  # The builder decodes the grey camera's 'L' JPEGs as grey RGB: equal channels (up to JPEG coding).
  channel_spread = {}
  for split in ('train', 'test'):
    for example in tfds.as_numpy(local_build.as_dataset(split=split)):
      rgb = example['image'].astype(int)
      spread = np.abs(rgb - rgb.mean(-1, keepdims=True))[example['seg'][..., 0] > 0].mean()
      channel_spread.setdefault(example['camera'].decode() == grey_camera[split], []).append(spread)
  assert max(channel_spread[True]) < 1.5 < min(channel_spread[False]), channel_spread


def test_frontal_rig(mano_pair, tmp_path):
  """--rig frontal (the demo's): cameras within 40 degrees of -z, three landscape and one portrait
  listed camera, colour only, bright backgrounds."""
  summary = synthetic.write_split(str(tmp_path), 'train', 4, mano_pair, seed=SEED, rig='frontal')
  assert summary['kept'] == 4 and sum(summary['skipped'].values()) == len(synthetic.BROKEN_ENTRIES)
  data, cameras = _load(str(tmp_path), 'train', 'data'), _load(str(tmp_path), 'train', 'camera')
  for camera_capture in cameras.values():
    for d in _view_directions(camera_capture).values():
      assert np.degrees(np.arccos(-d[2])) < np.degrees(synthetic.CAMERA_CONE_RAD) + 2.0
  sizes = {
      image['camera']: (image['width'], image['height'])
      for image in data['images']
      if image['capture'] == 0 and image['camera'] in cameras['0']['camrot']
  }
  assert sorted(sizes.values()) == [(334, 512), (512, 334), (512, 334), (512, 334)]
  means = []
  for image in data['images']:
    try:
      with Image.open(raw.image_path(str(tmp_path), 'train', image['file_name'])) as decoded:
        decoded.load()
        assert decoded.mode == 'RGB'
        means.append(float(np.mean(np.asarray(decoded))))
    except OSError:
      pass
  assert sorted(means)[0] < pp.MIN_MEAN_INTENSITY and min(sorted(means)[1:]) > 60.0


def test_unknown_rig_is_refused(tmp_path):
  with pytest.raises(ValueError, match='rig'):
    synthetic.generate(str(tmp_path), 4, 2, rig='dome')
  assert not os.listdir(tmp_path)


def test_synthetic_mano_wrist_is_away_from_the_origin(mano_pair):
  """As in the real MANO (~9.6 cm): a root rotation about the origin instead of the wrist is
  centimetres off, so the builder's root-pivot correction is exercised."""
  for side, sign in (('right', 1.0), ('left', -1.0)):
    asset = mano_pair[side]
    wrist = np.asarray(asset.J_regressor, np.float64)[0] @ np.asarray(asset.v_template, np.float64)
    np.testing.assert_allclose(wrist, [sign * 0.0957, 0.0064, 0.0062], atol=1e-4)


def test_scene_sets_separation_gloves_and_captures(mano_pair, tmp_path):
  """A Scene (the demo's is DEMO_SCENE) spaces the hands as asked, dresses them in the two gloves and
  spreads the frames over its captures, each with its own listed cameras."""
  scene = synthetic.Scene(hand_separation_m=(0.10, 0.16), gloves=True, captures_per_split=3)
  rng = np.random.default_rng(0)
  for _ in range(5):
    frame = synthetic.make_frame(rng, mano_pair, 0, 100, 'seq', np.array([0.0, 0.0, 1.0]), scene=scene)
    centroids = {side: frame.meshes[side][0].mean(axis=0) for side in ('left', 'right')}
    assert 0.10 - 1e-6 <= np.linalg.norm(centroids['right'] - centroids['left']) <= 0.16 + 1e-6
    for side in ('left', 'right'):
      np.testing.assert_array_equal(frame.skin_rgb[side], synthetic.GLOVE_RGB[side])
  summary = synthetic.write_split(str(tmp_path), 'test', 12, mano_pair, seed=SEED, rig='frontal', scene=scene)
  assert summary['kept'] == 12
  data, cameras = _load(str(tmp_path), 'test', 'data'), _load(str(tmp_path), 'test', 'camera')
  assert sorted(cameras) == ['20', '21', '22']
  kept = [i for i in data['images'] if i['camera'] in cameras[str(i['capture'])]['camrot']][:12]
  assert sorted({i['capture'] for i in kept}) == [20, 21, 22]
  listed = {(c, cam) for c, capture in cameras.items() for cam in capture['camrot']}
  assert len(listed) == 3 * synthetic.VIEWS_PER_FRAME


def test_default_scene_is_the_documented_one():
  scene = synthetic.Scene()
  assert scene.hand_separation_m == (0.04, 0.08) and not scene.gloves and scene.captures_per_split == 2


@pytest.mark.parametrize(
    'kwargs,fragment',
    [
        (dict(hand_separation_m=(0.0, 0.05)), 'hand separation'),
        (dict(hand_separation_m=(0.08, 0.04)), 'hand separation'),
        (dict(captures_per_split=0), 'captures_per_split'),
        (dict(captures_per_split=synthetic.MAX_CAPTURES_PER_SPLIT + 1), 'captures_per_split'),
    ],
)
def test_a_bad_scene_is_refused(kwargs, fragment):
  with pytest.raises(ValueError, match=fragment):
    synthetic.Scene(**kwargs)


def test_scene_flags_override_the_named_scene():
  required = ['synthetic', '--out=o', '--num_train=1', '--num_test=1']
  cli.parse(synthetic.FLAGS, [*required, '--scene=demo', '--captures_per_split=3'])
  assert synthetic.scene_from_flags() == dataclasses.replace(synthetic.SCENES['demo'], captures_per_split=3)
  cli.parse(synthetic.FLAGS, [*required, '--hand_separation_cm=5,9.5'])
  assert synthetic.scene_from_flags() == synthetic.Scene(hand_separation_m=(0.05, 0.095))  # the rest: 'interacting'
