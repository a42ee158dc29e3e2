"""The plan of a split: values as json.load gives them, its size per image, image sizes."""

import json
import os
import shutil

import numpy as np
from PIL import Image

from data_prep import synthetic
from data_prep.interhand26m import preprocess, raw
from data_prep.interhand26m.interhand26m_dataset_builder import build


def test_plan_records_hold_the_json_values(synthetic_raw):
  """Every record equals what json.load of the three files gives for its annotation."""
  raw_dir, summary = synthetic_raw
  plan, skipped = raw.plan_split(raw_dir, 'train')
  assert len(plan) == summary['train']['kept'] + sum(
      summary['train']['skipped'][r] for r in (preprocess.IMAGE_CORRUPT, preprocess.IMAGE_DARK)
  )
  assert sum(skipped.values()) + len(plan) == summary['train']['annotations']
  loaded = {
      kind: json.load(open(raw.annotation_path(raw_dir, 'train', kind), encoding='utf-8'))
      for kind in ('data', 'camera', 'joint_3d', 'MANO_NeuralAnnot')
  }
  images = {image['id']: image for image in loaded['data']['images']}
  annotations = {annotation['id']: annotation for annotation in loaded['data']['annotations']}
  for i in range(len(plan)):
    record = plan.record(i)
    image = images[record['image_id']]
    annotation = annotations[record['image_id']]
    np.testing.assert_array_equal(record['joint_valid'], np.asarray(annotation['joint_valid']).reshape(42) != 0)
    np.testing.assert_array_equal(record['bbox'], np.asarray(annotation['bbox'], np.float32))
    assert (record['hand_type'], record['hand_type_valid']) == (
        annotation['hand_type'],
        bool(annotation['hand_type_valid']),
    )
    np.testing.assert_array_equal(  # the file holds float32 values
        record['joint_world_mm'],
        np.float32(loaded['joint_3d'][str(image['capture'])][str(image['frame_idx'])]['world_coord']),
    )
    assert (record['capture'], record['frame'], record['camera_id'], record['width'], record['height']) == (
        image['capture'],
        image['frame_idx'],
        image['camera'],
        image['width'],
        image['height'],
    )
    assert record['image_path'] == raw.image_path(raw_dir, 'train', image['file_name'])
    camera = preprocess.camera_from_raw(loaded['camera'][str(image['capture'])], image['camera'])
    for key, value in camera.items():
      np.testing.assert_array_equal(record['camera'][key], value)
    mano_frame = loaded['MANO_NeuralAnnot'][str(image['capture'])][str(image['frame_idx'])]
    for side in raw.HAND_SIDES:
      for key, value in preprocess.neuralannot_hand(mano_frame[side]).items():
        np.testing.assert_array_equal(record['mano'][side][key], value)


def test_plan_bytes_per_image(tmp_path):
  """The index keeps 78 bytes per selected annotation; with the shared MANO, joint and camera rows,
  under 128 bytes at 40 cameras per frame."""
  num_images = 8000
  written = synthetic.write_annotations_at_scale(str(tmp_path), 'train', num_images, num_captures=4)
  plan, skipped = raw.plan_split(str(tmp_path), 'train', check_image_files=False)
  assert len(plan) == written['interacting'] == num_images // 2
  assert dict(skipped) == {preprocess.NOT_INTERACTING: num_images // 2}
  assert plan.records.nbytes / len(plan) == 78
  assert plan.nbytes / len(plan) < 128
  plan.save(str(tmp_path / 'plan'))
  loaded = raw.SplitPlan.load(str(tmp_path / 'plan'))
  assert len(loaded) == len(plan) and loaded.record(17)['image_path'] == plan.record(17)['image_path']


def test_wrong_image_size_is_skipped_and_counted(synthetic_raw, tmp_path):
  raw_dir, summary = synthetic_raw
  shutil.copytree(raw_dir, tmp_path / 'raw')
  plan, _ = raw.plan_split(str(tmp_path / 'raw'), 'train')
  path = plan.record(0)['image_path']
  with Image.open(path) as image:
    image.resize((image.width - 2, image.height)).save(path, quality=95)
  builder = build(str(tmp_path / 'raw'), str(tmp_path / 'tfds'))
  skipped = builder.info.metadata['skipped']['train']
  assert skipped[preprocess.IMAGE_SIZE_MISMATCH] == 1
  assert builder.info.splits['train'].num_examples == summary['train']['kept'] - 1
  assert {r: n for r, n in skipped.items() if r != preprocess.IMAGE_SIZE_MISMATCH} == {
      r: n for r, n in summary['train']['skipped'].items() if r != preprocess.IMAGE_SIZE_MISMATCH
  }
  assert os.path.isfile(
      os.path.join(tmp_path, 'tfds', 'downloads', 'interhand26m_plan', 'interacting', 'train', 'records.npy')
  )
