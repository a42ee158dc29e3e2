"""The `interhand26m` TFDS builder on the synthetic raw dataset, in-process and with Apache Beam."""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from data_prep import synthetic
from data_prep.interhand26m import preprocess as pp
from data_prep.interhand26m import raw
from dir_jax.data import input_pipeline
from dir_jax.data import schema
from dir_jax.render import project_perspective, rasterize

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _examples(builder, split):
  """Decoded examples of a split, sorted by image_id."""
  examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
  return sorted(examples, key=lambda ex: int(ex['image_id']))


def _data_json(raw_dir, split):
  with open(raw.annotation_path(raw_dir, split, 'data'), encoding='utf-8') as f:
    return json.load(f)


def _verts_cam_m(mano_pair, example):
  params = {side: {key: example['mano'][side][key] for key in schema.MANO_KEYS} for side in schema.SIDES}
  return {side: pp.hand_mesh(mano_pair[side], params[side])[0].astype(np.float64) for side in schema.SIDES}


def _bilinear_warp(image_u8, affine, size):
  """Independent of PIL: sample each crop pixel centre through the inverse affine (centres at +0.5)."""
  rows, cols = np.mgrid[0:size, 0:size]
  centres = np.stack([cols + 0.5, rows + 0.5, np.ones_like(cols, dtype=np.float64)], -1)
  points = centres @ np.linalg.inv(affine).T
  x, y = points[..., 0] - 0.5, points[..., 1] - 0.5
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < image_u8.shape[1]) & (y0 + 1 < image_u8.shape[0])
  x0c, y0c = np.clip(x0, 0, image_u8.shape[1] - 2), np.clip(y0, 0, image_u8.shape[0] - 2)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  img = image_u8.astype(np.float64)
  out = (
      (1 - fx) * (1 - fy) * img[y0c, x0c]
      + fx * (1 - fy) * img[y0c, x0c + 1]
      + (1 - fx) * fy * img[y0c + 1, x0c]
      + fx * fy * img[y0c + 1, x0c + 1]
  )
  return out, inside


def test_split_counts_and_skip_reasons(local_build, beam_build, synthetic_raw):
  summary = synthetic_raw[1]
  for builder in (local_build, beam_build):
    assert sorted(builder.info.splits) == ['test', 'train']  # no val annotations, no val split
    for split, counts in summary.items():
      assert builder.info.splits[split].num_examples == counts['kept']
    assert builder.info.metadata['skipped'] == {split: counts['skipped'] for split, counts in summary.items()}


def test_plan_split_without_images(synthetic_raw, tmp_path):
  """Annotations whose image files are absent are skipped before conversion (no split then)."""
  raw_dir, summary = synthetic_raw
  shutil.copytree(os.path.join(raw_dir, 'annotations'), tmp_path / 'annotations')
  plan, skipped = raw.plan_split(str(tmp_path), 'train')
  assert len(plan) == 0
  image_stage = (pp.IMAGE_MISSING, pp.IMAGE_CORRUPT, pp.IMAGE_DARK)
  expected = {r: n for r, n in summary['train']['skipped'].items() if n and r not in image_stage}
  expected[pp.IMAGE_MISSING] = summary['train']['kept'] + sum(summary['train']['skipped'][r] for r in image_stage)
  assert dict(skipped) == expected


def test_metadata_reads_back(local_build, synthetic_raw):
  reloaded = tfds.builder_from_directory(local_build.data_dir)
  assert reloaded.info.metadata['skipped']['train'] == synthetic_raw[1]['train']['skipped']


def test_local_and_beam_builds_are_identical(local_build, beam_build):
  """Same seed, other raw folder, other execution mode: the same decoded examples and metadata."""
  assert dict(local_build.info.metadata) == dict(beam_build.info.metadata)
  for split in ('train', 'test'):
    local, beam = _examples(local_build, split), _examples(beam_build, split)
    assert len(local) == len(beam)
    for a, b in zip(local, beam):
      jax.tree.map(np.testing.assert_array_equal, a, b)


def test_examples_match_the_raw_files(local_build, synthetic_raw, mano_pair):
  raw_dir, _ = synthetic_raw
  with open(raw.annotation_path(raw_dir, 'train', 'camera'), encoding='utf-8') as f:
    cameras = json.load(f)
  with open(raw.annotation_path(raw_dir, 'train', 'MANO_NeuralAnnot'), encoding='utf-8') as f:
    mano = json.load(f)
  images = {image['id']: image for image in _data_json(raw_dir, 'train')['images']}
  for example in _examples(local_build, 'train'):
    image = images[int(example['image_id'])]
    assert (int(example['capture']), int(example['frame']), example['camera'].decode()) == (
        image['capture'],
        image['frame_idx'],
        image['camera'],
    )
    capture, cam = str(image['capture']), image['camera']
    rotation = np.asarray(cameras[capture]['camrot'][cam], np.float64)
    campos_m = np.asarray(cameras[capture]['campos'][cam], np.float64) / 1000.0
    # MANO: the stored camera-frame parameters pose the hands the raw world-frame ones pose,
    # recomputed here through the generator's axis-angle path.
    verts_cam_m = _verts_cam_m(mano_pair, example)
    for side in schema.SIDES:
      hand = mano[capture][str(image['frame_idx'])][side]
      verts_world_m, _ = synthetic.hand_mesh_world(mano_pair[side], hand)
      np.testing.assert_allclose(verts_cam_m[side], (verts_world_m - campos_m) @ rotation.T, atol=3e-5)
    # Intrinsics: the raw ones (+0.5) scaled and shifted so the hands' box fills 80 % of the crop.
    K_crop = example['intrinsics'].astype(np.float64)
    focal, princpt = cameras[capture]['focal'][cam], np.asarray(cameras[capture]['princpt'][cam]) + 0.5
    scale = K_crop[0, 0] / focal[0]
    np.testing.assert_allclose(K_crop[1, 1] / focal[1], scale, rtol=1e-6)
    assert K_crop[0, 1] == K_crop[1, 0] == 0 and list(K_crop[2]) == [0, 0, 1]
    xy = project_perspective(np.concatenate(list(verts_cam_m.values())), K_crop)[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [128.0, 128.0], atol=2e-3)
    np.testing.assert_allclose(np.max(hi - lo), 0.8 * schema.IMAGE_SIZE, atol=2e-3)
    # Image: the raw image resampled through affine = K_crop K_raw^-1, to the half pixel.
    K_raw = np.array([[focal[0], 0.0, princpt[0]], [0.0, focal[1], princpt[1]], [0.0, 0.0, 1.0]])
    affine = K_crop @ np.linalg.inv(K_raw)
    with Image.open(raw.image_path(raw_dir, 'train', image['file_name'])) as decoded:
      raw_rgb = np.asarray(decoded.convert('RGB'))
    expected, inside = _bilinear_warp(raw_rgb, affine, schema.IMAGE_SIZE)
    error = np.abs(example['image'] - expected)[inside].mean()  # ~1.7: two JPEG encodings
    assert error < 2.5
    for shift_px in ((0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5)):  # half a crop pixel off is worse
      shifted, _ = _bilinear_warp(
          raw_rgb,
          np.array([[1.0, 0.0, shift_px[0]], [0.0, 1.0, shift_px[1]], [0.0, 0.0, 1.0]]) @ affine,
          schema.IMAGE_SIZE,
      )
      assert error < np.abs(example['image'] - shifted)[inside].mean()


def test_triangulated_joints_round_trip(local_build, synthetic_raw, mano_pair):
  """joint_3d.json's world millimetres come back as camera-frame metres: against the file through
  camera.json by hand, and against the joints of the stored camera-frame MANO (the synthetic
  joint_3d.json holds the MANO joints), reordered with the documented joint order."""
  raw_dir, _ = synthetic_raw
  loaded = {
      kind: json.load(open(raw.annotation_path(raw_dir, 'train', kind), encoding='utf-8'))
      for kind in ('camera', 'joint_3d')
  }
  data = _data_json(raw_dir, 'train')
  images = {image['id']: image for image in data['images']}
  annotations = {annotation['id']: annotation for annotation in data['annotations']}
  examples = _examples(local_build, 'train')
  assert examples
  for example in examples:
    annotation = annotations[int(example['image_id'])]
    image = images[annotation['image_id']]
    capture, cam = str(image['capture']), image['camera']
    rotation = np.asarray(loaded['camera'][capture]['camrot'][cam], np.float64)
    campos_mm = np.asarray(loaded['camera'][capture]['campos'][cam], np.float64)
    world_mm = np.asarray(loaded['joint_3d'][capture][str(image['frame_idx'])]['world_coord'], np.float64)
    expected_m = (world_mm - campos_mm) @ rotation.T / 1000.0
    valid = np.asarray(annotation['joint_valid']).reshape(42) != 0
    np.testing.assert_array_equal(example['joint_3d_valid'], valid)
    assert example['joint_3d_cam_m'].shape == (42, 3) and example['joint_3d_cam_m'].dtype == np.float32
    np.testing.assert_allclose(example['joint_3d_cam_m'][valid], expected_m[valid], atol=2e-6)
    assert not example['joint_3d_cam_m'][~valid].any()
    assert example['hand_type'].decode() == annotation['hand_type'] == 'interacting'
    assert bool(example['hand_type_valid']) is bool(annotation['hand_type_valid'])
    np.testing.assert_array_equal(example['bbox_px'], np.asarray(annotation['bbox'], np.float32))
    params = {side: {key: example['mano'][side][key] for key in schema.MANO_KEYS} for side in schema.SIDES}
    for side, first in (('right', 0), ('left', 21)):
      mano_joints_m = pp.hand_mesh(mano_pair[side], params[side])[1]
      # InterHand2.6M's order within a hand: each finger tip to base (thumb .. pinky), then the wrist.
      wrist, thumb_tip, pinky_base = first + 20, first + 0, first + 19
      np.testing.assert_allclose(
          example['joint_3d_cam_m'][[wrist, thumb_tip, pinky_base]], mano_joints_m[[0, 4, 17]], atol=3e-5
      )
      np.testing.assert_allclose(
          schema.interhand_joints_in_dir_order(example['joint_3d_cam_m'], side), mano_joints_m, atol=3e-5
      )


def _dilate(mask):
  """(H, W) bool mask grown by one pixel (3x3)."""
  padded = np.pad(mask, 1)
  h, w = mask.shape
  shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
  return np.any([padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] for dy, dx in shifts], axis=0)


def test_seg_and_dense_targets(local_build, mano_pair):
  overlapping = 0
  for split in ('train', 'test'):
    for example in _examples(local_build, split):
      seg, dense, K_crop = example['seg'][..., 0], example['dense'], example['intrinsics']
      assert seg.shape == (256, 256)
      assert min(np.sum(seg == schema.SEG_RIGHT), np.sum(seg == schema.SEG_LEFT)) > 200
      # Every vertex projected with the stored intrinsics lies on (or next to) a hand pixel.
      verts_cam_m = _verts_cam_m(mano_pair, example)
      near_hands = _dilate(seg != schema.SEG_BACKGROUND)
      for verts_m in verts_cam_m.values():
        px = np.floor(project_perspective(verts_m, K_crop)[:, :2]).astype(int)
        assert np.all((px >= 0) & (px < 256)) and np.all(near_hands[px[:, 1], px[:, 0]])
      # Labels: the nearer hand where both cover a pixel, from each hand rasterised on its own.
      depth = {
          side: rasterize(project_perspective(verts_cam_m[side], K_crop), mano_pair[side].faces, 256, 256).depth
          for side in schema.SIDES
      }
      expected = np.where(depth['right'] <= depth['left'], schema.SEG_RIGHT, schema.SEG_LEFT)
      expected[np.isinf(depth['right']) & np.isinf(depth['left'])] = schema.SEG_BACKGROUND
      np.testing.assert_array_equal(seg, expected)
      overlapping += np.any(np.isfinite(depth['right']) & np.isfinite(depth['left']))
      # Dense: zero off the hands, template x (right hand positive) on them.
      assert np.all(dense[seg == schema.SEG_BACKGROUND] == 0)
      assert np.all(dense[seg != schema.SEG_BACKGROUND].max(axis=-1) > 0)
      assert np.median(dense[seg == schema.SEG_RIGHT][:, 0]) > np.median(dense[seg == schema.SEG_LEFT][:, 0])
  assert overlapping >= 2  # occlusion between the hands is exercised


def test_tfds_cli_finds_the_builder():
  """`tfds build data_prep/interhand26m` loads the builder from the folder's module."""
  from tensorflow_datasets.scripts.cli import build as build_cli  # pylint: disable=import-outside-toplevel

  builder_cls, kwargs = build_cli._get_builder_cls_and_kwargs(  # pylint: disable=protected-access
      os.path.join(REPO_ROOT, 'data_prep', 'interhand26m'), has_imports=False
  )
  assert (builder_cls.name, kwargs) == ('interhand26m', {})
  assert builder_cls.__module__ == 'interhand26m.interhand26m_dataset_builder'


def test_all_config_counts_and_location(all_build, local_build, synthetic_raw):
  """The 'all' config keeps the single-hand and hand_type_valid=0 annotations the 'interacting'
  config skips, in its own folder; both read back by name from one data_dir."""
  for split, counts in synthetic_raw[1].items():
    assert all_build.info.splits[split].num_examples == counts['all']['kept']
    assert all_build.info.metadata['skipped'][split] == counts['all']['skipped']
  assert all_build.data_dir.endswith(os.path.join('interhand26m', 'all', str(all_build.VERSION)))
  assert local_build.data_dir.endswith(os.path.join('interhand26m', 'interacting', str(local_build.VERSION)))
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(all_build.data_dir)))
  shutil.copytree(os.path.dirname(local_build.data_dir), os.path.join(data_dir, 'interhand26m', 'interacting'))
  for name, config in (
      ('interhand26m', 'interacting'),
      ('interhand26m/interacting', 'interacting'),
      ('interhand26m/all', 'all'),
  ):
    builder = input_pipeline.get_builder(data_dir, name)
    assert builder.builder_config.name == config
    counts = synthetic_raw[1]['train']
    assert builder.info.splits['train'].num_examples == (counts['all'] if config == 'all' else counts)['kept']


def test_all_config_examples(all_build, local_build, mano_pair):
  """Interacting examples are the 'interacting' config's, byte for byte; a single-hand example has
  the named hand alone: its MANO, its seg label, its triangulated joints, the crop around it."""
  single = 0
  for split in ('train', 'test'):
    interacting = {int(ex['image_id']): ex for ex in _examples(local_build, split)}
    for example in _examples(all_build, split):
      hand_type = example['hand_type'].decode()
      if int(example['image_id']) in interacting:
        jax.tree.map(np.testing.assert_array_equal, example, interacting.pop(int(example['image_id'])))
        continue
      if hand_type == 'interacting':
        assert not example['hand_type_valid']
        continue
      single += 1
      (other,) = set(schema.SIDES) - {hand_type}
      for key in schema.MANO_KEYS:
        np.testing.assert_array_equal(example['mano'][other][key], pp.ABSENT_HAND[key])
      params = {key: example['mano'][hand_type][key] for key in schema.MANO_KEYS}
      verts_m = pp.hand_mesh(mano_pair[hand_type], params)[0].astype(np.float64)
      xy = project_perspective(verts_m, example['intrinsics'].astype(np.float64))[:, :2]
      lo, hi = xy.min(axis=0), xy.max(axis=0)
      np.testing.assert_allclose((lo + hi) / 2, [128.0, 128.0], atol=2e-3)
      np.testing.assert_allclose(np.max(hi - lo), 0.8 * schema.IMAGE_SIZE, atol=2e-3)
      labels = set(np.unique(example['seg']).tolist())
      assert labels == {schema.SEG_BACKGROUND, schema.SEG_LABEL[hand_type]}
      valid = example['joint_3d_valid']
      named = schema.INTERHAND_HAND_OFFSET[hand_type]
      assert valid[named : named + 21].all() and not valid.sum() - 21
      joints = schema.interhand_joints_in_dir_order(example['joint_3d_cam_m'], hand_type)
      regressed = pp.hand_mesh(mano_pair[hand_type], params)[1]
      np.testing.assert_allclose(joints, regressed, atol=3e-5)
    assert not interacting  # every interacting example is in 'all' too
  assert single == 2 * 2  # a right-only and a left-only view in each split


def test_spilled_shuffle_buffer_gives_the_same_dataset(local_build, synthetic_raw, tmp_path, monkeypatch):
  """The local build's in-memory shuffle buffer is bounded (LOCAL_SHUFFLE_BUFFER_BYTES); past it tfds
  spills to disk buckets. With a 1-byte bound every example is spilled: same examples, same order,
  and tfds' own bound is back afterwards."""
  from data_prep.interhand26m import interhand26m_dataset_builder as module  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel

  default = shuffle.MAX_MEM_BUFFER_SIZE
  spills = []
  original_add = shuffle.Shuffler._add_to_bucket  # pylint: disable=protected-access
  monkeypatch.setattr(shuffle.Shuffler, '_add_to_bucket', lambda self, *a: spills.append(1) or original_add(self, *a))
  monkeypatch.setattr(module, 'LOCAL_SHUFFLE_BUFFER_BYTES', 1)
  spilled = module.build(synthetic_raw[0], str(tmp_path / 'tfds'))
  assert shuffle.MAX_MEM_BUFFER_SIZE == default
  assert len(spills) == sum(counts['kept'] for counts in synthetic_raw[1].values())
  for split in ('train', 'test'):
    ours, theirs = list(tfds.as_numpy(spilled.as_dataset(split=split))), list(
        tfds.as_numpy(local_build.as_dataset(split=split))
    )
    assert [int(ex['image_id']) for ex in ours] == [int(ex['image_id']) for ex in theirs]
    for a, b in zip(ours, theirs):
      jax.tree.map(np.testing.assert_array_equal, a, b)
