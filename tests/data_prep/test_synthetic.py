"""The synthetic InterHand2.6M generator: deterministic, raw layout, files that agree with each other."""

import json
import os

import numpy as np
from PIL import Image

from data_prep import synthetic
from data_prep.interhand26m import preprocess as pp
from data_prep.interhand26m import raw
from dir_jax.data import schema
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
      assert image['file_name'] == (f'Capture{image["capture"]}/{image["seq_name"]}/cam{image["camera"]}/'
                                    f'image{image["frame_idx"]}.jpg')
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
              np.asarray(joints_3d[capture][frame]['world_coord'])[offset:offset + 21],
              joints[interhand_order] * 1000.0, atol=0.05)
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
