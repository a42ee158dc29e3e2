"""Synthetic two-hand examples in the schema of `dir_jax.data.schema`, and a test-only tfds builder.

`Interhand26m` below is a test-only stand-in for the real builder (data_prep/interhand26m, written at
the same time, with the same features): once that is in, the tests should write through it instead.
Both hands are posed with a synthetic MANO pair, placed 0.7-0.95 m in front of a 256x256 camera
(f ~ 600 px, fx and fy slightly different, principal point near the centre) and rendered with the
numpy rasterizer.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from dir_jax.data import schema
from dir_jax.mano import gt_mano
from dir_jax.mano.asset import ManoAsset, ManoPair
from dir_jax.render import rasterizer

SIZE = schema.IMAGE_SIZE


@jax.jit
def _gt_vertices(asset, root_rotmat, hand_pose, betas, trans):
  verts, _ = gt_mano(asset, root_rotmat[None], hand_pose[None], betas[None], trans[None])
  return verts[0]


def hand_vertices(asset: ManoAsset, params: dict[str, np.ndarray]) -> np.ndarray:
  """(778, 3) float64 camera-frame metres of one hand posed by `params` (`schema.MANO_KEYS`)."""
  return np.asarray(_gt_vertices(asset, *(jnp.asarray(params[k], jnp.float32) for k in schema.MANO_KEYS)), np.float64)


def dense_colors(pair: ManoPair) -> np.ndarray:
  """(778, 3) in [0, 1]: the right template's normalised coordinates, used for both hands by index."""
  template = np.asarray(pair.right.v_template, np.float64)
  low, high = template.min(axis=0), template.max(axis=0)
  return (template - low) / (high - low)


def render(pair: ManoPair, hands: dict[str, dict[str, np.ndarray]], intrinsics: np.ndarray):
  """seg (H, W) uint8 with schema labels and dense (H, W, 3) float32 of both hands seen through K."""
  colors = dense_colors(pair)
  meshes = [
      (hand_vertices(pair[side], hands[side]), np.asarray(pair[side].faces), schema.SEG_LABEL[side], colors)
      for side in schema.SIDES
  ]
  return rasterizer.render_seg_dense(meshes, intrinsics, SIZE, SIZE)


def random_hands(pair: ManoPair, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
  """Camera-frame parameters of two hands side by side, centroids 0.7-0.95 m in front of the camera."""
  depth_m = rng.uniform(0.7, 0.95)
  hands = {}
  for side, x_m in (('left', -0.05), ('right', 0.05)):
    params = {
        'root_rotmat': Rotation.random(random_state=rng).as_matrix().astype(np.float32),
        'hand_pose': (0.3 * rng.normal(size=45)).astype(np.float32),
        'betas': (0.5 * rng.normal(size=10)).astype(np.float32),
        'trans': np.zeros(3, np.float32),
    }
    centroid = hand_vertices(pair[side], params).mean(axis=0)
    target = np.array([x_m + rng.uniform(-0.01, 0.01), rng.uniform(-0.02, 0.02), depth_m])
    params['trans'] = (target - centroid).astype(np.float32)
    hands[side] = params
  return hands


def random_example(pair: ManoPair, rng: np.random.Generator, image_id: int) -> dict:
  """One example as the tfds builder yields it (nested `mano`, seg (H, W, 1), dense uint8)."""
  focal_px = rng.uniform(560.0, 640.0)
  intrinsics = np.array(
      [
          [focal_px, 0.0, SIZE / 2 + rng.uniform(-8, 8)],
          [0.0, focal_px * rng.uniform(0.97, 1.03), SIZE / 2 + rng.uniform(-8, 8)],
          [0.0, 0.0, 1.0],
      ],
      np.float32,
  )
  hands = random_hands(pair, rng)
  seg, dense = render(pair, hands, intrinsics)
  noise = rng.integers(0, 120, size=(SIZE, SIZE, 3))
  image = np.where(seg[..., None] > 0, 60 + 190 * dense, noise).astype(np.uint8)
  return {
      'image': image,
      'seg': seg[..., None],
      'dense': np.round(255 * dense).astype(np.uint8),
      'intrinsics': intrinsics,
      'mano': hands,
      'capture': image_id % 3,
      'frame': 1000 + image_id,
      'camera': f'4000{image_id % 5}',
      'image_id': image_id,
  }


def features() -> tfds.features.FeaturesDict:
  """The FeaturesDict that `schema` describes."""
  size = schema.IMAGE_SIZE
  return tfds.features.FeaturesDict(
      {
          'image': tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
          'seg': tfds.features.Image(shape=(size, size, 1), encoding_format='png'),
          'dense': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
          'intrinsics': tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
          'mano': {
              side: {
                  key: tfds.features.Tensor(shape=schema.MANO_SHAPES[key], dtype=np.float32) for key in schema.MANO_KEYS
              }
              for side in schema.SIDES
          },
          'capture': np.int64,
          'frame': np.int64,
          'camera': tfds.features.Text(),
          'image_id': np.int64,
      }
  )


class Interhand26m(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Test-only builder named like the real one; set `examples` ({split: [example]}) before preparing."""

  VERSION = tfds.core.Version('0.0.1')
  examples: dict[str, list[dict]] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self.examples}

  def _generate_examples(self, split):
    for example in self.examples[split]:
      yield example['image_id'], example


def write_dataset(data_dir: str, examples: dict[str, list[dict]], num_shards: int = 2) -> str:
  """Writes `examples` ({split: [example]}) as tfds `interhand26m` under `data_dir`; returns its builder dir."""
  builder = Interhand26m(data_dir=data_dir)
  builder.examples = examples
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=num_shards, try_download_gcs=False)
  )
  return os.path.join(data_dir, 'interhand26m', str(Interhand26m.VERSION))
