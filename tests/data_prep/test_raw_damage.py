"""Damaged annotation files: a bad annotation is skipped and counted, a damaged file is named."""

import json
import os
import shutil

import numpy as np
import pytest

from data_prep.interhand26m import preprocess, raw


@pytest.fixture
def raw_copy(synthetic_raw, tmp_path):
  """The synthetic raw folder's annotations (images linked), free to damage."""
  raw_dir, _ = synthetic_raw
  shutil.copytree(os.path.join(raw_dir, 'annotations'), tmp_path / 'annotations')
  os.symlink(os.path.join(raw_dir, 'images'), tmp_path / 'images')
  return str(tmp_path)


def _edit_data(raw_dir, edit):
  path = raw.annotation_path(raw_dir, 'train', 'data')
  with open(path) as f:
    data = json.load(f)
  edit(data)
  with open(path, 'w') as f:
    json.dump(data, f)


def test_annotations_without_ids_are_skipped_and_counted(raw_copy, synthetic_raw):
  records_before, skipped_before = raw.plan_split(synthetic_raw[0], 'train')
  assert records_before

  def damage(data):
    kept = [a for a in data['annotations'] if a['hand_type'] == 'interacting' and a['hand_type_valid']]
    del kept[0]['id']  # one annotation without its id
    kept[1]['image_id'] = [kept[1]['image_id']]  # one whose image id is not a number
    image = next(i for i in data['images'] if i['id'] == kept[2]['image_id'])
    del image['capture']  # one whose image entry lacks the capture
    data['images'].append({'file_name': 'x.jpg'})  # an image entry without an id

  _edit_data(raw_copy, damage)
  records, skipped = raw.plan_split(raw_copy, 'train')
  assert skipped[preprocess.ANNOTATION_INVALID] >= 3
  assert len(records) <= len(records_before) - 3
  assert sum(skipped.values()) + len(records) == sum(skipped_before.values()) + len(records_before)


def _interacting_ids(raw_dir):
  with open(raw.annotation_path(raw_dir, 'train', 'data')) as f:
    return [a['id'] for a in json.load(f)['annotations'] if a['hand_type'] == 'interacting' and a['hand_type_valid']]


def test_unusable_evaluation_fields_are_skipped_and_counted(raw_copy, synthetic_raw):
  """A joint_valid of 41 values or a box with NaN skips its annotation as annotation_invalid; a
  joint marked invalid in data.json stays invalid in the record."""
  plan_before, skipped_before = raw.plan_split(synthetic_raw[0], 'train')
  ids = _interacting_ids(raw_copy)

  def damage(data):
    by_id = {a['id']: a for a in data['annotations']}
    by_id[ids[0]]['joint_valid'] = by_id[ids[0]]['joint_valid'][:41]
    by_id[ids[1]]['bbox'][2] = float('nan')
    by_id[ids[2]]['joint_valid'][3] = [0]

  _edit_data(raw_copy, damage)
  plan, skipped = raw.plan_split(raw_copy, 'train')
  assert skipped[preprocess.ANNOTATION_INVALID] == skipped_before[preprocess.ANNOTATION_INVALID] + 2
  assert len(plan) == len(plan_before) - 2
  records = {plan.record(i)['image_id']: plan.record(i) for i in range(len(plan))}
  assert ids[0] not in records and ids[1] not in records
  assert np.flatnonzero(~records[ids[2]]['joint_valid']).tolist() == [3]


def test_missing_or_non_finite_triangulated_joints_keep_the_annotation(raw_copy, synthetic_raw):
  """joint_3d.json without a finite joint: that joint reads NaN; without the frame: all NaN, and the
  annotations are kept either way (DIR trains on MANO)."""
  plan_before, skipped_before = raw.plan_split(synthetic_raw[0], 'train')
  path = raw.annotation_path(raw_copy, 'train', 'joint_3d')
  with open(path) as f:
    joints = json.load(f)
  capture, frames = next(iter(joints.items()))
  frame = next(iter(frames))
  frames[frame]['world_coord'][5] = [float('nan'), 0.0, 0.0]
  with open(path, 'w') as f:
    json.dump(joints, f)
  plan, skipped = raw.plan_split(raw_copy, 'train')
  assert len(plan) == len(plan_before) and skipped == skipped_before
  hit = [
      plan.record(i)
      for i in range(len(plan))
      if plan.record(i)['capture'] == int(capture) and plan.record(i)['frame'] == int(frame)
  ]
  assert hit
  for record in hit:
    assert np.isnan(record['joint_world_mm'][5]).all() and np.isfinite(np.delete(record['joint_world_mm'], 5, 0)).all()
  del frames[frame]
  with open(path, 'w') as f:
    json.dump(joints, f)
  plan, skipped = raw.plan_split(raw_copy, 'train')
  assert len(plan) == len(plan_before) and skipped == skipped_before
  for i in range(len(plan)):
    record = plan.record(i)
    if (record['capture'], record['frame']) == (int(capture), int(frame)):
      assert np.isnan(record['joint_world_mm']).all()
  example_camera = {'rotation': np.eye(3), 'translation_m': np.zeros(3)}
  cam_m, valid = preprocess.joints_camera_m(np.full((42, 3), np.nan), np.ones(42, bool), example_camera)
  assert not valid.any() and not cam_m.any()


@pytest.mark.parametrize('kind', ['data', 'camera', 'joint_3d', 'MANO_NeuralAnnot'])
def test_truncated_annotation_file_is_named(raw_copy, kind):
  path = raw.annotation_path(raw_copy, 'train', kind)
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[: len(content) // 2])
  with pytest.raises(raw.RawDataError, match=f'{path}: not valid JSON.*download'):
    raw.plan_split(raw_copy, 'train')
