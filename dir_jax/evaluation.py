"""The evaluation loop and its report: what the trainer's periodic evaluation and `evaluate.py` run.

Map: docs/architecture.md#inference.

`evaluate` runs the compiled evaluation step (`make_predict_fn`: the forward, the ground truth and every
protocol's per-sample errors and the interpenetration volume, all on the device) over one padded pass
of the eval split, data-parallel over every device of every host; only the per-sample errors (a few
hundred numbers per sample and stage, not the meshes) are gathered, and the host accumulates the
metrics (`dir_jax.metrics`); `write_report` writes metrics.json, metrics.md and pck.png
(`dir_jax.report`).
"""

import json
import os
from typing import Any, Callable, Collection, Mapping

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from dir_jax import inference, metrics, parallel, report
from dir_jax.data import input_pipeline
from dir_jax.mano import ManoPair
from dir_jax.model.dir import DIR


def default_protocols(builder) -> tuple[dict, tuple]:
  """The protocols an evaluation of `builder`'s dataset computes unless told: `metrics.SETTINGS` and the
  triangulated ones `metrics.choose_protocols` picks for the data (used when it stores those joints)."""
  return metrics.choose_protocols(None, True, builder.data_dir, input_pipeline.has_single_hand_examples(builder))


def make_predict_fn(
    model: DIR,
    mano: ManoPair,
    config: ml_collections.ConfigDict,
    settings: Mapping | None = None,
    triangulated: Collection | None = None,
    builder=None,
) -> Callable[..., dict]:
  """The run's evaluation step (`inference.make_predict_fn`) with every protocol's per-sample errors and,
  when `config.eval_voxel_m` is set, the interpenetration volume computed on the device
  (`metrics.make_row_errors_fn`).

  Args:
    settings: protocols on MANO joints by key (default `metrics.SETTINGS`).
    triangulated: protocols on triangulated joints (default: `default_protocols(builder)`'s; none
      when neither is given), computed for batches that carry those joints.

  Raises:
    ValueError: `config.eval_voxel_m` is set and the MANO faces cannot be closed.
  """
  if triangulated is None:
    triangulated = () if builder is None else default_protocols(builder)[1]
  errors_fn = metrics.make_row_errors_fn(
      metrics.EvalMano.from_pair(mano),
      metrics.SETTINGS if settings is None else settings,
      tuple(triangulated),
      config.eval_voxel_m,
  )
  return inference.make_predict_fn(model, mano, config.image_size, config.model.input_size, errors_fn)


def evaluate(
    model: DIR,
    variables: dict,
    mano: ManoPair,
    builder,
    config: ml_collections.ConfigDict,
    mesh: Mesh | None = None,
    predict_fn: Callable[..., dict] | None = None,
    settings: Mapping | None = None,
    triangulated: Collection | None = None,
    human_annot_ids: Collection[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
  """Metrics of every stage over the eval split (`dir_jax.metrics`), identical on every process.

  Args:
    mesh: from `parallel.make_mesh` (made here when not given).
    predict_fn: from `make_predict_fn` (built here when not given, with `settings` and
      `triangulated`); pass the same one to every evaluation of a run so that it compiles once. Its
      protocols are the ones computed.
    settings: protocols on MANO joints by key (default `metrics.SETTINGS`); only without `predict_fn`.
    triangulated: protocols on triangulated joints (default: `default_protocols`'), computed when
      the dataset stores those joints (`input_pipeline.has_triangulated_joints`); only without
      `predict_fn`.
    human_annot_ids: annotation ids (the examples' image_id) of the human_annot subset, for a
      protocol on that subset.
    progress: show a progress bar over the batches (on process 0).
  """
  if predict_fn is not None and (settings is not None or triangulated is not None):
    raise ValueError('evaluate: pass the protocols (settings, triangulated) to make_predict_fn, not with predict_fn')
  data_sharding = parallel.data_sharding(mesh or parallel.make_mesh())
  local_batch = config.eval_batch_size // jax.process_count()
  ds, num_batches = input_pipeline.create_eval_dataset(
      builder, config.data, batch_size=local_batch, process_index=jax.process_index(), process_count=jax.process_count()
  )
  predict_fn = predict_fn or make_predict_fn(model, mano, config, settings, triangulated, builder)
  accumulator = metrics.MetricAccumulator()
  listed_ids = None if human_annot_ids is None else np.asarray(sorted(human_annot_ids), np.int64)
  batches = input_pipeline.numpy_batches(ds)
  if progress and jax.process_index() == 0:
    batches = tqdm(batches, total=num_batches, desc='evaluating', unit='batch')
  for local in batches:
    valid = local.pop('valid')
    if listed_ids is not None:
      local['human_annot'] = np.isin(local['image_id'].astype(np.int64), listed_ids)
    errors = predict_fn(variables, parallel.global_batch(local, data_sharding))['errors']
    errors, valid = multihost_utils.process_allgather(
        (errors, jax.make_array_from_process_local_data(data_sharding, valid)), tiled=True
    )
    accumulator.update_rows(errors, valid=valid)
  return accumulator.result()


def write_report(results: Mapping, out_dir: str) -> str:
  """metrics.json, metrics.md (the paper's table beside ours) and pck.png in `out_dir`; returns the table."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
    json.dump(results, f, indent=1)
  table = report.markdown_table(results, report.paper_reference())
  with open(os.path.join(out_dir, 'metrics.md'), 'w') as f:
    f.write(table + '\n')
  report.pck_plot(results, os.path.join(out_dir, 'pck.png'))
  return table
