"""Selected records -> examples, in the building process or inside Apache Beam workers.

This module is imported by its absolute name (`data_prep.interhand26m.convert`) wherever it runs,
so Beam workers can unpickle `beam_convert_shard` whichever way the builder module itself was loaded.
A Beam element is a shard of a saved `raw.SplitPlan` (folder, first record, end): the worker maps
the plan's arrays and reads only its rows, so the launching process never holds the records.
"""

import functools
import os
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image

from data_prep.interhand26m import preprocess
from data_prep.interhand26m import raw
from dir_jax.data import image_io
from dir_jax.mano import load_mano_pair

METRICS_NAMESPACE = 'interhand26m'
RECORDS_PER_SHARD = 1024  # one Beam element: about 20 s of conversion on one core


def counter_name(split: str, reason: str) -> str:
  """Name of the Beam counter of one split's skips for one reason: '<split>/<reason>'."""
  return f'{split}/{reason}'


def read_image(path: str) -> tuple[str | None, np.ndarray | None]:
  """(None, (H, W, 3) uint8 RGB) or (IMAGE_MISSING | IMAGE_CORRUPT, None)."""
  if not os.path.isfile(path):
    return preprocess.IMAGE_MISSING, None
  try:
    with Image.open(path) as image:
      return None, image_io.to_rgb_u8(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return preprocess.IMAGE_CORRUPT, None


class Converter:
  """Converts records of `raw.SplitPlan.record` with one MANO pair (loaded once)."""

  def __init__(self, mano_dir: str):
    self.pair = load_mano_pair(mano_dir)
    self.vertex_colors = preprocess.dense_vertex_colors(self.pair)

  def __call__(self, record: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """(None, example) or (skip reason, None) for one record."""
    reason, image_rgb_u8 = read_image(record['image_path'])
    if reason:
      return reason, None
    if image_rgb_u8.shape[:2] != (record['height'], record['width']):
      return preprocess.IMAGE_SIZE_MISMATCH, None
    return preprocess.convert_example(record, image_rgb_u8, self.pair, self.vertex_colors)


@functools.lru_cache(maxsize=None)
def converter_for(mano_dir: str) -> Converter:
  """One `Converter` per process and MANO folder (Beam workers build it on first use)."""
  return Converter(mano_dir)


def shards(num_records: int, records_per_shard: int) -> list[tuple[int, int]]:
  """(start, end) ranges covering `num_records` records, `records_per_shard` each (the last fewer)."""
  return [(start, min(start + records_per_shard, num_records)) for start in range(0, num_records, records_per_shard)]


def beam_convert_shard(shard: tuple[str, int, int], mano_dir: str, split: str) -> Iterator[tuple[int, dict]]:
  """Beam FlatMap body over (plan folder, start, end): yields (image_id, example) per converted
  record, and counts each skip in a Beam counter."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel

  plan_dir, start, end = shard
  plan, converter = raw.SplitPlan.load(plan_dir), converter_for(mano_dir)
  for i in range(start, end):
    record = plan.record(i)
    reason, example = converter(record)
    if reason:
      beam.metrics.Metrics.counter(METRICS_NAMESPACE, counter_name(split, reason)).inc()
      continue
    yield record['image_id'], example
