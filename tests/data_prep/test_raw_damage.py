"""Damaged annotation files: a bad annotation is skipped and counted, a damaged file is named."""

import json
import os
import shutil

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


@pytest.mark.parametrize('kind', ['data', 'camera', 'MANO_NeuralAnnot'])
def test_truncated_annotation_file_is_named(raw_copy, kind):
  path = raw.annotation_path(raw_copy, 'train', kind)
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[:len(content) // 2])
  with pytest.raises(raw.RawDataError, match=f'{path}: not valid JSON.*download'):
    raw.plan_split(raw_copy, 'train')
