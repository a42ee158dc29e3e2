"""TFDS builder `interhand26m`: InterHand2.6M's images prepared for DIR (docs/architecture.md#data-preparation).

Each example is one selected annotation: the 256x256 crop around its hands, its intrinsics, the
hands' MANO parameters in the camera frame, and rendered seg/dense targets (`dir_jax.data.schema`).
Two configs: `interacting` (the default; the interacting annotations with a valid hand type, what
DIR trains and is tested on) and `all` (every annotation whose named hands have MANO: also the
single-hand ones and those with hand_type_valid false, for InterHand2.6M's single-hand and
all-frames evaluation; a hand a single-hand example does not name has all-zero MANO parameters).

    tfds build data_prep/interhand26m --config interacting --manual_dir RAW --data_dir OUT
    tfds build data_prep/interhand26m --config all --manual_dir RAW --data_dir OUT
    tfds build data_prep/interhand26m --config interacting --manual_dir RAW --data_dir OUT \\
        --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"

(without `--config`, the tfds CLI builds both), or from Python, `build(raw_dir, data_dir, beam=False,
config='interacting')`. Without Beam options the examples are
converted in the building process; with them (`--beam_pipeline_options` or
`DownloadConfig.beam_options` / `beam_runner`) `_generate_examples` returns a Beam PTransform over
shards of the selected annotations. Skipped annotations are counted by reason (`preprocess.SKIP_REASONS`), in
both modes, printed at the end and stored in `builder.info.metadata['skipped'][split][reason]`.

Memory is bounded: each split is planned from streamed annotation files (`raw.plan_split`, about
80 bytes per selected annotation plus one row per selected frame and camera), the plan is saved to
`<data_dir>/downloads/interhand26m_plan/<config>/<split>/` and dropped, and each split's generator (or each
Beam worker, shard by shard) maps the saved arrays while it converts. The Beam launcher holds only
the list of shards. `bench/plan_interhand.py` measures planning's peak memory and time.
"""

import collections
import contextlib
import os
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from data_prep.interhand26m import convert
from data_prep.interhand26m import preprocess
from data_prep.interhand26m import raw
from dir_jax.data import schema
from dir_jax.mano.asset import MANO_DOWNLOAD_HELP

_HOMEPAGE = 'https://mks0601.github.io/InterHand2.6M/'
_CITATION = """\
@inproceedings{Moon_2020_ECCV_InterHand2.6M,
  author = {Moon, Gyeongsik and Yu, Shoou-I and Wen, He and Shiratori, Takaaki and Lee, Kyoung Mu},
  title = {InterHand2.6M: A Dataset and Baseline for 3D Interacting Hand Pose Estimation from a Single RGB Image},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2020}
}
@inproceedings{Ren_2023_ICCV_DIR,
  author = {Ren, Pengfei and Wen, Chao and Zheng, Xiaozheng and Xue, Zhou and Sun, Haifeng and Qi, Qi and Wang, Jingyu and Liao, Jianxin},
  title = {Decoupled Iterative Refinement Framework for Interacting Hands Reconstruction from a Single RGB Image},
  booktitle = {International Conference on Computer Vision (ICCV)},
  year = {2023}
}
"""


# The local writer keeps a split's serialized examples in memory up to this size before it spills
# them to disk buckets (tfds' shuffler: 1 GB by default, which with the build process's ~0.9 GB of
# TensorFlow, JAX and MANO would take a full-size local build past 1.5 GB; each example is ~45 kB).
LOCAL_SHUFFLE_BUFFER_BYTES = 128 << 20


@contextlib.contextmanager
def _shuffle_buffer_bytes(limit: int) -> Iterator[None]:
  """tfds' in-memory shuffle buffer set to `limit` bytes for the block, then restored (tfds reads it
  from `tensorflow_datasets.core.shuffle.MAX_MEM_BUFFER_SIZE` at every example)."""
  default = tfds_shuffle.MAX_MEM_BUFFER_SIZE
  tfds_shuffle.MAX_MEM_BUFFER_SIZE = limit
  try:
    yield
  finally:
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = default


def features() -> tfds.features.FeaturesDict:
  """The example features of `dir_jax.data.schema`."""
  size = schema.IMAGE_SIZE
  hand = {key: tfds.features.Tensor(shape=schema.MANO_SHAPES[key], dtype=np.float32) for key in schema.MANO_KEYS}
  return tfds.features.FeaturesDict(
      {
          'image': tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
          'seg': tfds.features.Image(shape=(size, size, 1), encoding_format='png'),
          'dense': tfds.features.Image(shape=(size, size, 3), encoding_format='png'),
          'intrinsics': tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
          'mano': {side: dict(hand) for side in schema.SIDES},
          'capture': np.int64,
          'frame': np.int64,
          'camera': tfds.features.Text(),
          'image_id': np.int64,
          'joint_3d_cam_m': tfds.features.Tensor(shape=(schema.INTERHAND_NUM_JOINTS, 3), dtype=np.float32),
          'joint_3d_valid': tfds.features.Tensor(shape=(schema.INTERHAND_NUM_JOINTS,), dtype=np.bool_),
          'hand_type': tfds.features.Text(),
          'hand_type_valid': np.bool_,
          'bbox_px': tfds.features.Tensor(shape=(4,), dtype=np.float32),
      }
  )


class Interhand26m(tfds.core.GeneratorBasedBuilder):
  """InterHand2.6M (MANO NeuralAnnot) cropped for DIR: interacting annotations, or all of them."""

  VERSION = tfds.core.Version('1.2.0')
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=subset, description=description)
      for subset, description in (
          ('interacting', "Interacting annotations with a valid hand type: DIR's training and test data."),
          (
              'all',
              'Every annotation whose named hands have MANO (single-hand ones and hand_type_valid false '
              "included): InterHand2.6M's single-hand and all-frames evaluation.",
          ),
      )
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'interacting'
  RELEASE_NOTES = {
      '1.0.0': 'First release: 256x256 crops, camera-frame MANO, seg and dense targets.',
      '1.1.0': (
          "Keeps the annotations the field evaluates with: joint_3d.json's triangulated joints in the "
          "camera frame in metres (joint_3d_cam_m, InterHand2.6M's 42-joint order) and their validity "
          "(joint_3d_valid), hand_type, hand_type_valid and data.json's box (bbox_px). Annotations "
          'whose joint_valid or bbox is unusable are skipped as annotation_invalid; images whose size '
          "differs from data.json's as image_size_mismatch."
      ),
      '1.2.0': (
          'Two configs: interacting (the default, the examples of 1.1.0) and all (also single-hand '
          'annotations, whose other hand has all-zero MANO parameters, and hand_type_valid false ones).'
      ),
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
InterHand2.6M and MANO are licensed downloads; place them in the manual folder as below.

1. InterHand2.6M ({_HOMEPAGE}): download the v1.0 images (the 5 fps subset,
   InterHand2.6M_5fps_batch1, is enough) and the annotations including the MANO NeuralAnnot fits.
   Extract them so that the manual folder holds
     images/<split>/Capture<c>/<seq_name>/cam<camera>/image<frame>.jpg
     annotations/<split>/InterHand2.6M_<split>_data.json
     annotations/<split>/InterHand2.6M_<split>_camera.json
     annotations/<split>/InterHand2.6M_<split>_joint_3d.json
     annotations/<split>/InterHand2.6M_<split>_MANO_NeuralAnnot.json
   for <split> in train, val, test (a split whose data.json is absent is not produced).
2. MANO: {MANO_DOWNLOAD_HELP.format(folder='<manual folder>/mano/')}

Then: tfds build data_prep/interhand26m --config interacting --manual_dir <manual folder> --data_dir <output folder>
(--config all also converts the single-hand annotations, for InterHand2.6M's all-frames evaluation)
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split('\n\n')[1],
        features=features(),
        homepage=_HOMEPAGE,
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(
      self, dl_manager: tfds.download.DownloadManager, download_config: tfds.download.DownloadConfig
  ) -> None:
    """Chooses local or Beam conversion, builds the splits, then stores the skip counts."""
    self._use_beam = download_config.beam_runner is not None or download_config.beam_options is not None
    self._skipped: dict[str, collections.Counter] = {}
    with _shuffle_buffer_bytes(LOCAL_SHUFFLE_BUFFER_BYTES):
      super()._download_and_prepare(dl_manager, download_config)
    skipped = {
        split: {reason: int(counts[reason]) for reason in preprocess.SKIP_REASONS}
        for split, counts in sorted(self._skipped.items())
    }
    self.info.metadata['skipped'] = skipped
    for split, counts in skipped.items():
      kept = self.info.splits[split].num_examples if split in self.info.splits else 0
      print(
          f'interhand26m/{self.builder_config.name} {split}: kept {kept}, skipped {sum(counts.values())} '
          f'({", ".join(f"{r} {n}" for r, n in counts.items() if n) or "none"})'
      )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    raw_dir = os.fspath(dl_manager.manual_dir)
    mano_dir = raw.mano_dir(raw_dir)
    convert.converter_for(mano_dir)  # fails early, with download help, when MANO is missing
    generators = {}
    for split in raw.SPLITS:
      if not raw.has_split(raw_dir, split):
        logging.info(
            'interhand26m: %s not found; split %r is not produced', raw.annotation_path(raw_dir, split, 'data'), split
        )
        continue
      plan, self._skipped[split] = raw.plan_split(raw_dir, split, subset=self.builder_config.name)
      if not len(plan):
        logging.warning(
            'interhand26m: no annotation of %r selected (skipped: %s); split not produced',
            split,
            dict(self._skipped[split]),
        )
        continue
      logging.info('interhand26m: %s: %d annotations selected before reading images', split, len(plan))
      plan_dir = os.path.join(os.fspath(dl_manager.download_dir), 'interhand26m_plan', self.builder_config.name, split)
      plan.save(plan_dir)
      generators[split] = self._generate_examples(plan_dir, len(plan), mano_dir, split)
      del plan  # the generator maps the saved plan when its split is written
    if not generators:
      raise FileNotFoundError(
          f'no usable annotation in {raw_dir}: no annotations/<split>/InterHand2.6M_<split>_data.json, '
          f'or all skipped ({ {split: dict(c) for split, c in self._skipped.items()} }).\n'
          + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      )
    return generators

  def _generate_examples(self, plan_dir: str, num_records: int, mano_dir: str, split: str):
    """A generator of (image_id, example) over the plan saved in `plan_dir`, or the equivalent Beam
    PTransform over its shards (`convert.shards`) when Beam is on."""
    if self._use_beam:
      beam = tfds.core.lazy_imports.apache_beam
      shards = [(plan_dir, start, end) for start, end in convert.shards(num_records, convert.RECORDS_PER_SHARD)]
      return (
          beam.Create(shards)
          | beam.Reshuffle()
          | beam.FlatMap(convert.beam_convert_shard, mano_dir=mano_dir, split=split)
      )
    return self._generate_local(plan_dir, mano_dir, split)

  def _generate_local(self, plan_dir: str, mano_dir: str, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    plan, converter = raw.SplitPlan.load(plan_dir), convert.converter_for(mano_dir)
    for i in range(len(plan)):
      record = plan.record(i)
      reason, example = converter(record)
      if reason:
        self._skipped[split][reason] += 1
        continue
      yield record['image_id'], example

  def _process_pipeline_result(self, pipeline_result) -> None:
    """Adds the Beam workers' skip counters to the counts of the JSON selection."""
    beam = tfds.core.lazy_imports.apache_beam
    query = beam.metrics.metric.MetricsFilter().with_namespace(convert.METRICS_NAMESPACE)
    for counter in pipeline_result.metrics().query(query)['counters']:
      split, reason = counter.key.metric.name.split('/')
      self._skipped[split][reason] += counter.committed


def build(
    raw_dir: str, data_dir: str, beam: bool = False, num_workers: int = 2, config: str = 'interacting'
) -> Interhand26m:
  """Builds `interhand26m` from a raw folder without the tfds CLI.

  Args:
    raw_dir: the manual folder (layout in `Interhand26m.MANUAL_DOWNLOAD_INSTRUCTIONS`).
    data_dir: TFDS data folder; the dataset lands in `<data_dir>/interhand26m/<config>/<VERSION>`.
    beam: convert with Apache Beam (the DirectRunner's FnApiRunner, one process per worker)
      instead of in-process.
    num_workers: Beam worker processes.
    config: 'interacting' or 'all' (`Interhand26m.BUILDER_CONFIGS`).

  Returns:
    The prepared builder (`builder.as_dataset(split=...)`, `builder.info.metadata['skipped']`).
  """
  download_config = tfds.download.DownloadConfig(manual_dir=raw_dir)
  if beam:
    # The DirectRunner's local engine, named directly: the DirectRunner would first try to download
    # Beam's Prism runner.
    # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    download_config = tfds.download.DownloadConfig(
        manual_dir=raw_dir,
        beam_runner=FnApiRunner(),
        beam_options=PipelineOptions([f'--direct_num_workers={num_workers}', '--direct_running_mode=multi_processing']),
    )
  preprocess.check_subset(config)
  builder = Interhand26m(data_dir=data_dir, config=config)
  builder.download_and_prepare(download_config=download_config)
  return builder
