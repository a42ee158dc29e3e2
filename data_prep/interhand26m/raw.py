"""The raw InterHand2.6M layout: file paths, streaming annotation reading, and the plan of one split.

    <raw_dir>/images/<split>/<file_name>          file_name = Capture<c>/<seq_name>/cam<id>/image<frame>.jpg
    <raw_dir>/annotations/<split>/InterHand2.6M_<split>_{data,camera,joint_3d,MANO_NeuralAnnot}.json
    <raw_dir>/mano/MANO_{LEFT,RIGHT}.pkl

DIR computes every training target from the MANO parameters; joint_3d.json's triangulated joints,
data.json's joint validity, hand type and box are kept for evaluation (`dir_jax.data.schema`).

Memory: the annotation files are read as streams (`json_stream`), one data.json entry or one capture of
camera.json / joint_3d.json / MANO_NeuralAnnot.json at a time, and a split's plan (`SplitPlan`)
keeps `RECORD_DTYPE.itemsize` = 78 bytes per selected annotation plus one row of MANO parameters
and one of triangulated joints per selected frame, and one camera per selected (capture, camera).
While data.json is read, every image entry takes about 50 bytes more (`_ImageTable`) and every
annotation 44 (`_AnnotationTable`), released when the plan is made.
"""

import array
import collections
import dataclasses
import os
from typing import Any, Iterator, Mapping

import numpy as np

from data_prep.interhand26m import json_stream
from data_prep.interhand26m import preprocess
from dir_jax.data import schema

SPLITS = ('train', 'val', 'test')
ANNOTATION_KINDS = ('data', 'camera', 'joint_3d', 'MANO_NeuralAnnot')
HAND_SIDES = ('left', 'right')  # order of the hands in `SplitPlan.mano_*`
_INT64_MAX = np.iinfo(np.int64).max
_INT32_MAX = np.iinfo(np.int32).max


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


def _members(path: str, arrays: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
  """`json_stream.top_level_members` of a file; a damaged or truncated file raises RawDataError."""
  try:
    with open(path, encoding='utf-8') as f:
      yield from json_stream.top_level_members(f, arrays)
  except (json_stream.JsonStreamError, UnicodeDecodeError) as e:
    raise RawDataError(
        f'{path}: not valid JSON ({e}); the file is truncated or damaged, download and unpack it again'
    ) from e


def _int64(value: Any) -> int | None:
  """`int(value)` when it converts and fits in int64, else None."""
  try:
    number = int(value)
  except (TypeError, ValueError, OverflowError):
    return None
  return number if -_INT64_MAX <= number <= _INT64_MAX else None


def _int_key(value: Any) -> int | None:
  """The int a data.json id equals as a dict key (ints, bools, integral floats in int64), else None."""
  if isinstance(value, (bool, int)) or (isinstance(value, float) and value.is_integer()):
    number = int(value)
    return number if -_INT64_MAX <= number <= _INT64_MAX else None
  return None


def _canonical_int(key: str) -> int | None:
  """The int whose `str` is exactly `key` (the only keys a `str(int)` lookup can hit), else None."""
  number = _int64(key) if key[:1].isdigit() or key[:1] == '-' else None
  return number if number is not None and str(number) == key else None


class _Interned:
  """Strings numbered in order of first appearance."""

  def __init__(self):
    self.index: dict[str, int] = {}

  def __call__(self, text: str) -> int:
    return self.index.setdefault(text, len(self.index))

  def names(self) -> list[str]:
    return list(self.index)


class _ImageTable:
  """data.json's image entries as parallel arrays (about 50 bytes each), looked up by id as a dict.

  An entry is usable when its capture, frame_idx, width and height convert with `int` (int64;
  width and height positive int32) and it has a camera and a file_name. The file name is kept as
  two interned strings: its folder with the trailing '/' and its base name. Integral ids are looked
  up in a sorted array, other ids in a dict; a later entry with the same id replaces an earlier one,
  as in `{image['id']: image}`.
  """

  def __init__(self):
    self.int_key, self.has_int_key = array.array('q'), array.array('b')
    self.capture, self.frame = array.array('q'), array.array('q')
    self.width, self.height = array.array('i'), array.array('i')
    self.camera, self.folder, self.base = array.array('i'), array.array('i'), array.array('i')
    self.usable = array.array('b')
    self.other_keys: dict[Any, int] = {}
    self.cameras, self.folders, self.bases = _Interned(), _Interned(), _Interned()

  def add(self, image: Any) -> None:
    if not isinstance(image, Mapping) or 'id' not in image:
      return
    key = _int_key(image['id'])
    if key is None:
      try:
        self.other_keys[image['id']] = len(self.usable)
      except TypeError:  # an unhashable id (a list or an object) is never found
        return
    values = [_int64(image.get(name)) for name in ('capture', 'frame_idx', 'width', 'height')]
    usable = (
        all(v is not None for v in values)
        and all(0 < v <= _INT32_MAX for v in values[2:])
        and 'camera' in image
        and 'file_name' in image
    )
    folder, sep, base = str(image['file_name']).rpartition('/') if usable else ('', '', '')
    self.int_key.append(0 if key is None else key)
    self.has_int_key.append(key is not None)
    for column, value in zip((self.capture, self.frame, self.width, self.height), values):
      column.append(value if usable else 0)
    self.camera.append(self.cameras(str(image['camera'])) if usable else -1)
    self.folder.append(self.folders(folder + sep))
    self.base.append(self.bases(base))
    self.usable.append(usable)

  def rows(self, keys: np.ndarray) -> np.ndarray:
    """(N,) int64 row of each int64 id in `keys`, -1 when absent."""
    table = np.frombuffer(self.int_key, np.int64)
    candidates = np.flatnonzero(np.frombuffer(self.has_int_key, np.int8))
    if not len(candidates):
      return np.full(len(keys), -1, np.int64)
    order = candidates[np.argsort(table[candidates], kind='stable')]  # repeated ids: the last one last
    position = np.maximum(np.searchsorted(table[order], keys, side='right') - 1, 0)
    return np.where(table[order][position] == keys, order[position], -1)

  def column(self, name: str) -> np.ndarray:
    values = getattr(self, name)
    return np.frombuffer(values, {'q': np.int64, 'i': np.int32, 'b': np.int8}[values.typecode])


RECORD_DTYPE = np.dtype(
    [
        ('image_id', np.int64),
        ('capture', np.int64),
        ('frame', np.int64),  # as data.json gives them
        ('width', np.int32),
        ('height', np.int32),  # data.json's image size, pixels
        ('camera_row', np.int32),
        ('mano_row', np.int32),  # rows of SplitPlan.camera_* / mano_*
        ('folder', np.int32),
        ('base', np.int32),  # file_name = folders[folder] + bases[base]
        ('joint_row', np.int32),  # row of SplitPlan.joint_world_mm; -1: the frame is not in joint_3d.json
        ('joint_valid', np.uint64),  # bit j: data.json's joint_valid[j] is not 0 (42 joints)
        ('bbox', np.float32, (4,)),  # data.json's bbox: x, y, width, height, original image pixels
        ('hand_type', np.int8),  # index into schema.HAND_TYPES
        ('hand_type_valid', np.int8),  # data.json's hand_type_valid, 0 or 1
    ]
)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """The selected annotations of a split, in data.json order, as arrays (see `plan_split`).

  Attributes:
    images_dir: `<raw_dir>/images/<split>`.
    records: (N,) RECORD_DTYPE, 78 bytes per selected annotation.
    camera_ids: (C,) str; camera_rotation (C, 3, 3), camera_translation_m (C, 3), camera_K_px
      (C, 3, 3) float64: `preprocess.camera_from_raw` of each selected (capture, camera).
    mano_pose (F, 2, 48), mano_shape (F, 2, 10), mano_trans (F, 2, 3): float64
      `preprocess.neuralannot_hand` of each selected frame, hands in HAND_SIDES order; zeros for a
      hand without a usable entry (one that its annotations' hand type does not name).
    joint_world_mm: (J, 42, 3) float32, joint_3d.json's `world_coord` of each selected frame found
      there, millimetres, NaN where the file has no finite coordinate (`preprocess.joints_world_mm`;
      float32 keeps 0.1 micrometre at 2 m).
    folders (D,), bases (B,): str, the parts of the selected file names.
  """

  images_dir: str
  records: np.ndarray
  camera_ids: np.ndarray
  camera_rotation: np.ndarray
  camera_translation_m: np.ndarray
  camera_K_px: np.ndarray
  mano_pose: np.ndarray
  mano_shape: np.ndarray
  mano_trans: np.ndarray
  joint_world_mm: np.ndarray
  folders: np.ndarray
  bases: np.ndarray

  def __len__(self) -> int:
    return len(self.records)

  @property
  def nbytes(self) -> int:
    """Bytes of all the plan's arrays."""
    return sum(getattr(self, f.name).nbytes for f in dataclasses.fields(self) if f.name != 'images_dir')

  def record(self, i: int) -> dict[str, Any]:
    """Selected annotation i as `preprocess.convert_example` and `convert.Converter` take it.

    Returns:
      `image_id`, `capture`, `frame`, `width`, `height` (int), `camera_id` (str), `image_path`,
      `camera` (`preprocess.camera_from_raw` output), `mano` ({side: `preprocess.neuralannot_hand`
      output}, world frame), `joint_world_mm` ((42, 3) float64 of the stored float32, all NaN when
      the frame is not in joint_3d.json), `joint_valid` ((42,) bool, data.json's), `bbox` ((4,) float32),
      `hand_type` (str), `hand_type_valid` (bool).
    """
    row = self.records[i]
    camera, frame, joints = int(row['camera_row']), int(row['mano_row']), int(row['joint_row'])
    return {
        'image_id': int(row['image_id']),
        'capture': int(row['capture']),
        'frame': int(row['frame']),
        'width': int(row['width']),
        'height': int(row['height']),
        'camera_id': str(self.camera_ids[camera]),
        'image_path': os.path.join(self.images_dir, str(self.folders[row['folder']]) + str(self.bases[row['base']])),
        'camera': {
            'rotation': np.array(self.camera_rotation[camera]),
            'translation_m': np.array(self.camera_translation_m[camera]),
            'K_px': np.array(self.camera_K_px[camera]),
        },
        'mano': {
            side: {
                'pose': np.array(self.mano_pose[frame, k]),
                'shape': np.array(self.mano_shape[frame, k]),
                'trans': np.array(self.mano_trans[frame, k]),
            }
            for k, side in enumerate(HAND_SIDES)
        },
        'joint_world_mm': (
            np.array(self.joint_world_mm[joints], np.float64)
            if joints >= 0
            else np.full((schema.INTERHAND_NUM_JOINTS, 3), np.nan)
        ),
        'joint_valid': valid_from_bits(row['joint_valid']),
        'bbox': np.array(row['bbox'], np.float32),
        'hand_type': schema.HAND_TYPES[int(row['hand_type'])],
        'hand_type_valid': bool(row['hand_type_valid']),
    }

  def save(self, folder: str) -> None:
    """Writes one `<field>.npy` per attribute into `folder` (created; existing files replaced)."""
    os.makedirs(folder, exist_ok=True)
    for field in dataclasses.fields(self):
      np.save(os.path.join(folder, f'{field.name}.npy'), np.asarray(getattr(self, field.name)))

  @classmethod
  def load(cls, folder: str) -> 'SplitPlan':
    """The plan `save` wrote, its arrays memory-mapped (a worker reads only the rows it converts)."""
    fields = {}
    for field in dataclasses.fields(cls):
      path = os.path.join(folder, f'{field.name}.npy')
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path}: missing from the split plan in {folder}; build the dataset again '
            '(the plan is written when the split is planned)'
        )
      fields[field.name] = np.load(path, mmap_mode='r')
    fields['images_dir'] = str(fields['images_dir'])
    return cls(**fields)


_REASON_CODE = {reason: code for code, reason in enumerate(preprocess.SKIP_REASONS, start=1)}


def valid_from_bits(bits: int | np.integer) -> np.ndarray:
  """(42,) bool joint validity from `RECORD_DTYPE['joint_valid']` (bit j: joint j)."""
  return (int(bits) >> np.arange(schema.INTERHAND_NUM_JOINTS)) & 1 == 1


# The evaluation fields recorded for an annotation that is skipped anyway.
_NO_FIELDS = {'joint_valid_bits': 0, 'bbox': (0.0, 0.0, 0.0, 0.0), 'hand_type': 0, 'hand_type_valid': 0}


class _AnnotationTable:
  """data.json's annotations as parallel arrays (44 bytes each), joined to `_ImageTable` at the end.

  Per annotation: its image key, its id, the first skip reason the annotation itself gives, and the
  fields kept for evaluation (`preprocess.annotation_fields`, read only when nothing else skips it).
  Ids that are not integers are kept in a dict, so the images may come before or after.
  """

  def __init__(self, subset: str):
    self.subset = subset
    self.keys, self.key_is_int, self.ids, self.codes = (
        array.array('q'),
        array.array('b'),
        array.array('q'),
        array.array('b'),
    )
    self.other_keys: dict[int, Any] = {}  # annotation index -> an image_id that is not an integer
    self.joint_bits, self.boxes = array.array('Q'), array.array('f')
    self.hand_types, self.hand_type_valid = array.array('b'), array.array('b')

  def add(self, annotation: Any) -> None:
    invalid = _REASON_CODE[preprocess.ANNOTATION_INVALID]
    code, key, image_id, fields = 0, None, None, None
    try:
      raw_key = annotation['image_id']
      key = _int_key(raw_key)
      if key is None:
        hash(raw_key)  # an unhashable id (a list or an object) is never found
        self.other_keys[len(self.codes)] = raw_key
      image_id = _int64(annotation.get('id'))
    except (KeyError, TypeError, IndexError, AttributeError):
      code = invalid
    if not code:
      code = _REASON_CODE.get(preprocess.annotation_reason(annotation, self.subset), 0)
      if not code:
        fields = preprocess.annotation_fields(annotation)
      # Unusable id or fields: invalid once the image is found.
      code = code if image_id is not None and (code or fields) else -code - 1
    self.keys.append(0 if key is None else key)
    self.key_is_int.append(key is not None and code != invalid)
    self.ids.append(0 if image_id is None else image_id)
    self.codes.append(code)
    fields = fields or _NO_FIELDS
    self.joint_bits.append(fields['joint_valid_bits'])
    self.boxes.extend(fields['bbox'])
    self.hand_types.append(fields['hand_type'])
    self.hand_type_valid.append(fields['hand_type_valid'])

  def joined(self, images: _ImageTable) -> dict[str, np.ndarray]:
    """The annotations joined to their images.

    Returns:
      `row` (N,) int64 image row (-1: none), `image_id` (N,) int64, `code` (N,) int8: 0 or the
      reason's `_REASON_CODE`, in `raw.plan_split`'s order: ANNOTATION_INVALID (no usable
      image_id), IMAGE_MISSING (no image entry), ANNOTATION_INVALID (no usable id, unusable
      joint_valid or bbox, or the image entry unusable), then `preprocess.annotation_reason`;
      `joint_valid` (N,) uint64 bits, `bbox` (N, 4) float32, `hand_type` (N,) int8,
      `hand_type_valid` (N,) int8 (zeros where `code` is not 0).
    """
    invalid, missing = _REASON_CODE[preprocess.ANNOTATION_INVALID], _REASON_CODE[preprocess.IMAGE_MISSING]
    code = np.frombuffer(self.codes, np.int8).astype(np.int8)
    rows = images.rows(np.frombuffer(self.keys, np.int64))
    rows = np.where(np.frombuffer(self.key_is_int, np.int8).astype(bool), rows, -1)
    for index, raw_key in self.other_keys.items():
      rows[index] = images.other_keys.get(raw_key, -1)
    looked_up = code != invalid
    no_image = looked_up & (rows < 0)
    unusable = looked_up & ~no_image & ((code < 0) | (images.column('usable')[np.maximum(rows, 0)] == 0))
    code = np.where(no_image, missing, np.where(unusable, invalid, code)).astype(np.int8)
    return {
        'row': rows,
        'image_id': np.frombuffer(self.ids, np.int64),
        'code': code,
        'joint_valid': np.frombuffer(self.joint_bits, np.uint64),
        'bbox': np.frombuffer(self.boxes, np.float32).reshape(-1, 4),
        'hand_type': np.frombuffer(self.hand_types, np.int8),
        'hand_type_valid': np.frombuffer(self.hand_type_valid, np.int8),
    }


def _cameras(path: str, needed: Mapping[int, set[str]]) -> dict[tuple[int, str], dict[str, np.ndarray] | None]:
  """`preprocess.camera_from_raw` of each needed (capture, camera id), one capture read at a time."""
  found = {}
  for key, capture_entry in _members(path):
    capture = _canonical_int(key)
    for camera_id in needed.get(capture, ()):
      found[capture, camera_id] = preprocess.camera_from_raw(capture_entry, camera_id)
  return found


def _frame_entries(path: str, needed: Mapping[int, set[int]]) -> Iterator[tuple[int, int, Any]]:
  """(capture, frame, entry) for each needed frame of a file keyed by capture then frame
  (MANO_NeuralAnnot.json, joint_3d.json), one capture read at a time; entry None when absent."""
  for key, capture_entry in _members(path):
    capture = _canonical_int(key)
    for frame in needed.get(capture, ()):
      yield capture, frame, capture_entry.get(str(frame)) if isinstance(capture_entry, Mapping) else None


def _mano(path: str, needed: Mapping[int, set[int]]) -> tuple[dict[tuple[int, int], tuple[int, tuple]], list[dict]]:
  """Each needed (capture, frame): (its row in the returned list of hands, -1 when it has none; the
  `mano_reason` for each hand type, in `schema.HAND_TYPES` order). A row holds {side:
  `neuralannot_hand` or None}."""
  found, hands = {}, []
  for capture, frame, mano_frame in _frame_entries(path, needed):
    reasons = tuple(preprocess.mano_reason(mano_frame, preprocess.hand_sides(t)) for t in schema.HAND_TYPES)
    if all(reasons):
      found[capture, frame] = -1, reasons
      continue
    found[capture, frame] = len(hands), reasons
    hands.append({side: preprocess.neuralannot_hand(mano_frame.get(side)) for side in HAND_SIDES})
  return found, hands


def _joints(path: str, needed: Mapping[int, set[int]]) -> tuple[dict[tuple[int, int], int], list[np.ndarray]]:
  """Each needed (capture, frame) that joint_3d.json holds: its row in the returned list of
  `preprocess.joints_world_mm` arrays. A frame absent, or whose entry is malformed, is left out."""
  found, joints = {}, []
  for capture, frame, entry in _frame_entries(path, needed):
    world_mm = preprocess.joints_world_mm(entry)
    if world_mm is not None:
      found[capture, frame] = len(joints)
      joints.append(world_mm)
  return found, joints


def plan_split(
    raw_dir: str, split: str, check_image_files: bool = True, subset: str = 'interacting'
) -> tuple[SplitPlan, collections.Counter]:
  """Selects a split's annotations on everything the JSON files and the file listing tell.

  Annotations are joined to their images by `image_id` and visited in data.json order. Each one
  either becomes a record or counts under the first skip reason that applies (ANNOTATION_INVALID or
  IMAGE_MISSING from the join, `preprocess.annotation_reason`, ANNOTATION_INVALID from
  `preprocess.annotation_fields`, `preprocess.mano_reason` of the hands the hand type names,
  CAMERA_MISSING, IMAGE_MISSING). Images
  are not opened here, only looked up, so a split whose images were not downloaded has no records.
  A frame that joint_3d.json lacks does not skip its annotations: their joints are all invalid.
  Each JSON file is read once, as a stream (`json_stream`): data.json one image or annotation at a
  time, camera.json, joint_3d.json and MANO_NeuralAnnot.json one capture at a time, keeping only
  the selected cameras and frames.

  Args:
    raw_dir: root of the raw layout.
    split: 'train', 'val' or 'test'.
    check_image_files: look each selected image file up (False: assume it exists; for measuring
      the planning of annotations without their images).
    subset: `preprocess.SUBSETS`: 'interacting' (valid interacting annotations) or 'all'.

  Returns:
    plan: the selected annotations (`SplitPlan`).
    skipped: Counter of skip reasons.

  Raises:
    RawDataError: an annotation file is not valid JSON (truncated or damaged).
  """
  preprocess.check_subset(subset)
  data_path = annotation_path(raw_dir, split, 'data')
  images, annotation_table = _ImageTable(), _AnnotationTable(subset)
  for key, entry in _members(data_path, arrays=('images', 'annotations')):
    if key == 'images':
      images.add(entry)
    elif key == 'annotations':
      annotation_table.add(entry)
  annotations = annotation_table.joined(images)
  del annotation_table
  skipped = collections.Counter()
  for code, count in zip(*np.unique(annotations['code'], return_counts=True)):
    if code:
      skipped[preprocess.SKIP_REASONS[code - 1]] += int(count)
  chosen = np.flatnonzero(annotations['code'] == 0)
  rows = annotations['row'][chosen]
  kept_fields = {
      name: annotations[name][chosen] for name in ('image_id', 'joint_valid', 'bbox', 'hand_type', 'hand_type_valid')
  }
  del annotations
  capture, frame = images.column('capture')[rows], images.column('frame')[rows]
  camera_names = images.cameras.names()
  camera_index = images.column('camera')[rows]
  needed_cameras, needed_frames = collections.defaultdict(set), collections.defaultdict(set)
  for c, f, k in np.unique(np.stack([capture, frame, camera_index], axis=1), axis=0).tolist():
    needed_cameras[c].add(camera_names[k])
    needed_frames[c].add(f)
  mano_rows, hands = _mano(annotation_path(raw_dir, split, 'MANO_NeuralAnnot'), needed_frames)
  cameras = _cameras(annotation_path(raw_dir, split, 'camera'), needed_cameras)
  joint_rows, joints = _joints(annotation_path(raw_dir, split, 'joint_3d'), needed_frames)
  folder_names, base_names = images.folders.names(), images.bases.names()
  images_dir = os.path.join(raw_dir, 'images', split)
  camera_rows: dict[tuple[int, str], int] = {}
  kept, mano_row, camera_row, joint_row = [], [], [], []
  no_frame = -1, (preprocess.MANO_MISSING,) * len(schema.HAND_TYPES)
  for i, (c, f, k, folder, base, hand_type) in enumerate(
      zip(
          capture.tolist(),
          frame.tolist(),
          camera_index.tolist(),
          images.column('folder')[rows].tolist(),
          images.column('base')[rows].tolist(),
          kept_fields['hand_type'].tolist(),
      )
  ):
    found, mano_reasons = mano_rows.get((c, f), no_frame)
    camera = cameras.get((c, camera_names[k]))
    if mano_reasons[hand_type]:
      reason = mano_reasons[hand_type]
    elif camera is None:
      reason = preprocess.CAMERA_MISSING
    elif check_image_files and not os.path.isfile(os.path.join(images_dir, folder_names[folder] + base_names[base])):
      reason = preprocess.IMAGE_MISSING
    else:
      reason = None
    if reason:
      skipped[reason] += 1
      continue
    kept.append(i)
    mano_row.append(found)
    joint_row.append(joint_rows.get((c, f), -1))
    camera_row.append(camera_rows.setdefault((c, camera_names[k]), len(camera_rows)))
  kept = np.asarray(kept, np.int64)
  kept_rows = rows[kept]
  records = np.zeros(len(kept), RECORD_DTYPE)
  records['image_id'], records['capture'], records['frame'] = kept_fields['image_id'][kept], capture[kept], frame[kept]
  for name in ('joint_valid', 'bbox', 'hand_type', 'hand_type_valid'):
    records[name] = kept_fields[name][kept]
  records['width'], records['height'] = images.column('width')[kept_rows], images.column('height')[kept_rows]
  used_mano, records['mano_row'] = np.unique(np.asarray(mano_row, np.int64), return_inverse=True)
  used_folders, records['folder'] = np.unique(images.column('folder')[kept_rows], return_inverse=True)
  used_bases, records['base'] = np.unique(images.column('base')[kept_rows], return_inverse=True)
  records['camera_row'] = camera_row
  used_joints, joint_index = np.unique(np.asarray(joint_row, np.int64), return_inverse=True)
  records['joint_row'] = np.where(np.asarray(joint_row) < 0, -1, joint_index - int(np.sum(used_joints < 0)))
  used_joints = used_joints[used_joints >= 0]
  camera_list = [cameras[key] for key in camera_rows]
  del images

  def stacked(values: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(values).astype(np.float64) if values else np.zeros((0, *shape))

  def hand_values(row: int, key: str) -> np.ndarray:  # a hand without a usable entry: zeros
    return np.stack(
        [
            np.zeros(preprocess.NEURALANNOT_SIZES[key]) if hands[row][side] is None else hands[row][side][key]
            for side in HAND_SIDES
        ]
    )

  plan = SplitPlan(
      images_dir=images_dir,
      records=records,
      camera_ids=np.array([camera_id for _, camera_id in camera_rows], dtype=str).reshape(-1),
      camera_rotation=stacked([cam['rotation'] for cam in camera_list], (3, 3)),
      camera_translation_m=stacked([cam['translation_m'] for cam in camera_list], (3,)),
      camera_K_px=stacked([cam['K_px'] for cam in camera_list], (3, 3)),
      **{
          f'mano_{key}': stacked([hand_values(r, key) for r in used_mano.tolist()], (2, size))
          for key, size in preprocess.NEURALANNOT_SIZES.items()
      },
      joint_world_mm=stacked([joints[r] for r in used_joints.tolist()], (schema.INTERHAND_NUM_JOINTS, 3)).astype(
          np.float32
      ),
      folders=np.array([folder_names[j] for j in used_folders.tolist()], dtype=str).reshape(-1),
      bases=np.array([base_names[j] for j in used_bases.tolist()], dtype=str).reshape(-1),
  )
  return plan, skipped
