"""The raw InterHand2.6M layout: file paths, annotation loading, and selection of one split.

    <raw_dir>/images/<split>/<file_name>          file_name = Capture<c>/<seq_name>/cam<id>/image<frame>.jpg
    <raw_dir>/annotations/<split>/InterHand2.6M_<split>_{data,camera,joint_3d,MANO_NeuralAnnot}.json
    <raw_dir>/mano/MANO_{LEFT,RIGHT}.pkl

joint_3d.json is not read: DIR computes every target from the MANO parameters (spec §12).
"""

import collections
import json
import os
from typing import Any, Mapping

from data_prep.interhand26m import preprocess

SPLITS = ('train', 'val', 'test')
ANNOTATION_KINDS = ('data', 'camera', 'joint_3d', 'MANO_NeuralAnnot')


def annotation_path(raw_dir: str, split: str, kind: str) -> str:
  """Path of `InterHand2.6M_<split>_<kind>.json` (kind in ANNOTATION_KINDS)."""
  return os.path.join(raw_dir, 'annotations', split, f'InterHand2.6M_{split}_{kind}.json')


def image_path(raw_dir: str, split: str, file_name: str) -> str:
  """Path of an image from its data.json `file_name` (relative to images/<split>)."""
  return os.path.join(raw_dir, 'images', split, file_name)


def mano_dir(raw_dir: str) -> str:
  """The folder holding MANO_LEFT.pkl and MANO_RIGHT.pkl."""
  return os.path.join(raw_dir, 'mano')


def has_split(raw_dir: str, split: str) -> bool:
  """Whether the split's data.json exists (a split without it is not produced)."""
  return os.path.isfile(annotation_path(raw_dir, split, 'data'))


class RawDataError(ValueError):
  """An annotation file of the raw download cannot be read: the message names it and what to do."""


def _load_json(path: str) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RawDataError(f'{path}: not valid JSON ({type(e).__name__}: {e}); the file is truncated or damaged, '
                       'download and unpack it again') from e


def _joined(annotation: Any, images: Mapping[Any, Mapping[str, Any]]) -> tuple[str | None, dict[str, Any]]:
  """(skip reason or None, the ids of an annotation joined with its image entry)."""
  try:
    image = images.get(annotation['image_id'])
    if image is None:  # an annotation without its image entry
      return preprocess.IMAGE_MISSING, {}
    return None, {'image_id': int(annotation['id']), 'capture': int(image['capture']),
                  'frame': int(image['frame_idx']), 'camera_id': str(image['camera']),
                  'file_name': str(image['file_name'])}
  except (KeyError, TypeError, ValueError):
    return preprocess.ANNOTATION_INVALID, {}


def plan_split(raw_dir: str, split: str) -> tuple[list[dict[str, Any]], collections.Counter]:
  """Selects a split's annotations on everything the JSON files and the file listing tell.

  Annotations are joined to their images by `image_id` and visited in data.json order. Each one
  either becomes a record or counts under the first skip reason that applies
  (`preprocess.annotation_reason`, `preprocess.mano_reason`, CAMERA_MISSING, IMAGE_MISSING). Images
  are not opened here, only looked up, so a split whose images were not downloaded has no records.

  Args:
    raw_dir: root of the raw layout.
    split: 'train', 'val' or 'test'.

  Returns:
    records: per selected annotation, `image_id` (the annotation's id), `capture`, `frame` (int),
      `camera_id` (str), `image_path`, `camera` (`preprocess.camera_from_raw` output) and `mano`
      ({side: `preprocess.neuralannot_hand` output}, world frame).
    skipped: Counter of skip reasons.
  """
  data = _load_json(annotation_path(raw_dir, split, 'data'))
  cameras = _load_json(annotation_path(raw_dir, split, 'camera'))
  mano = _load_json(annotation_path(raw_dir, split, 'MANO_NeuralAnnot'))
  images = {image['id']: image for image in data['images'] if isinstance(image, Mapping) and 'id' in image}
  records, skipped = [], collections.Counter()
  for annotation in data['annotations']:
    reason, ids = _joined(annotation, images)
    if reason:
      skipped[reason] += 1
      continue
    capture, frame, camera_id = str(ids['capture']), str(ids['frame']), ids['camera_id']
    mano_frame = mano.get(capture, {}).get(frame)
    reason = preprocess.annotation_reason(annotation) or preprocess.mano_reason(mano_frame)
    camera = None if reason else preprocess.camera_from_raw(cameras.get(capture), camera_id)
    if reason is None and camera is None:
      reason = preprocess.CAMERA_MISSING
    path = image_path(raw_dir, split, ids['file_name'])
    if reason is None and not os.path.isfile(path):
      reason = preprocess.IMAGE_MISSING
    if reason:
      skipped[reason] += 1
      continue
    records.append({
        'image_id': ids['image_id'],
        'capture': ids['capture'],
        'frame': ids['frame'],
        'camera_id': camera_id,
        'image_path': path,
        'camera': camera,
        'mano': {side: preprocess.neuralannot_hand(mano_frame[side]) for side in ('left', 'right')},
    })
  return records, skipped
