"""The training loop: data-parallel over every device of every host, checkpointed, resumable.

`train_and_evaluate(config, workdir)` is what `train.py` calls. Layout of `workdir`:
  checkpoints/<step>/   the latest `config.keep_checkpoints` states (orbax, `dir_jax.checkpoint` layout)
  best/<step>/          the state with the best `config.best_metric` at evaluation time
  events.out.tfevents*  TensorBoard: every loss term, learning rate, gradient norm, steps/s, metrics
  metrics_<step>.json   evaluation results (step 0 = at initialisation, with `config.eval_at_start`)

Parallelism: one mesh axis 'data' over `jax.devices()` (all hosts). The state is replicated; each
process feeds its own share of the global batch (`jax.make_array_from_process_local_data`), so the
jit-compiled step sees one global batch and BatchNorm statistics are global-batch statistics.

Resumption: the newest restorable step in `checkpoints/` is restored (damaged steps are skipped with a
warning), and the input stream is advanced to that step (`create_train_dataset(start_step=...)`), so
an interrupted run continues exactly as an uninterrupted one. With `config.data.augment_on='device'` the
batches arrive decoded only and the train step augments them with keys of (seed, step, global row),
so resumption stays exact and the device layout does not change the draws.

Lean batches: labels travel at the grid the losses read (`label_grid.label_side`, 32x32 for the
released model), not at the image's 256x256. SIGTERM (preemption) makes the loop save
the current step and return; before the run's first step is compiled it ends the process at once
(nothing new to save). One run per workdir: `workdir/.train.lock` is held while training.

No per-step host synchronisation: the loss reaches the host at log and checkpoint steps only (the
first non-finite step is tracked on the device), and processes agree on a SIGTERM at those steps.
"""

import collections
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from dir_jax import checkpoint, evaluation, metrics, parallel, protocol
from dir_jax.convert.torch_checkpoint import (
    copy_shared_stats_to_slots,
    import_torchvision_resnet50,
    load_torch_checkpoint,
)
from dir_jax.data import augment, device_augment, input_pipeline, label_grid
from dir_jax.mano import load_mano_pair
from dir_jax.model.dir import placeholder_mano
from dir_jax.train import state as state_lib
from dir_jax.train import step as step_lib

LOCK_FILE = '.train.lock'


class TrainingDataError(RuntimeError):
  """A training TFRecord file is damaged; the message names it and the last good checkpoint."""


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class WorkdirInUseError(RuntimeError):
  """Another process trains in the same workdir; the message names it and what to do."""


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds `workdir/.train.lock` (flock) while training, so a second run on the same workdir refuses.

  The operating system releases the lock when the holder exits in any way (kill -9 included), so a
  crashed run never leaves it stuck. Raises WorkdirInUseError when another process holds it.
  """
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, 'a+') as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      lock.seek(0)
      holder = lock.read().strip() or 'unknown'
      raise WorkdirInUseError(
          f'{workdir} is in use by another training run ({holder}); two runs on one workdir would overwrite '
          "each other's checkpoints. Wait for it to end or stop it, or give another --workdir."
      ) from e
    lock.seek(0)
    lock.truncate()
    lock.write(f'pid {os.getpid()} on {socket.gethostname()}, since {time.strftime("%Y-%m-%d %H:%M:%S")}')
    lock.flush()
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


class _PreemptionFlag:
  """Set by SIGTERM once armed; the loop reads it once per step, and several processes agree on it at
  log and checkpoint steps only (`should_stop`).

  It is armed after the run's first step has been compiled and dispatched: before that there is
  nothing new to save, so SIGTERM keeps its default action and ends the process at once, instead of
  after a first compile that can take minutes.
  """

  def __init__(self):
    self.requested = False
    self._armed = False
    self._installed = False
    self._previous = None

  def __enter__(self):
    return self

  def arm(self) -> None:
    """Installs the handler on the first call; later calls (one per step) return at once."""
    if self._armed:
      return
    self._armed = True
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    except ValueError:  # not the main thread: no signal handling
      pass

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning('SIGTERM received: saving a checkpoint at the end of this step')
    self.requested = True

  def __exit__(self, *exc):
    if self._installed:  # a handler installed outside Python reads back as None: restore the default
      signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)

  def should_stop(self, agree: bool) -> bool:
    """Whether to save and stop after this step: with one process, whether it got SIGTERM (read
    locally, every step); with several, whether any got it, asked of all processes only when
    `agree` (log and checkpoint steps), so no other step waits for the slowest process. All
    processes then save the same step and stop."""
    if jax.process_count() > 1:
      return agree and bool(np.any(multihost_utils.process_allgather(np.asarray([self.requested]))))
    return self.requested


class _LibraryInfoFilter(logging.Filter):
  """Drops INFO records of orbax (a dozen lines per checkpoint), keeping its warnings and errors."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f'{os.sep}orbax{os.sep}' not in record.pathname


def quiet_library_logs() -> None:
  """Keeps the run's log readable: our progress lines, and only warnings from orbax."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

  absl_logging.get_absl_handler().addFilter(_LibraryInfoFilter())


def compute_dtype(name: str):
  dtypes = {'float32': None, 'bfloat16': jnp.bfloat16}
  if name not in dtypes:
    raise ValueError(f'config.compute_dtype must be one of {sorted(dtypes)}, got {name!r}')
  return dtypes[name]


def build_model(config: ml_collections.ConfigDict):
  return checkpoint.model_from_config(config.model, compute_dtype(config.compute_dtype))


class DevicePrefetch:
  """Batches put on the devices `size` steps ahead of the one being consumed, so that host-to-device
  transfers overlap the running steps. The order is the source's (resumption stays exact); an error
  reading a batch is raised when that batch's turn comes, not earlier."""

  def __init__(self, batches: Iterator[dict[str, np.ndarray]], put, size: int):
    if size < 0:
      raise ValueError(f'device prefetch size must be >= 0, got {size}')
    self._batches, self._put, self._size = batches, put, size
    self._queue: collections.deque = collections.deque()
    self._exhausted = False

  def __iter__(self):
    return self

  def __next__(self):
    while not self._exhausted and len(self._queue) <= self._size:
      try:
        self._queue.append(self._put(next(self._batches)))
      except StopIteration:
        self._exhausted = True
      except input_pipeline.READ_ERRORS as e:
        self._queue.append(e)
        self._exhausted = True
    if not self._queue:
      raise StopIteration
    item = self._queue.popleft()
    if isinstance(item, BaseException):
      raise item
    return item


def _abstract_state(state: state_lib.TrainState, sharding: NamedSharding) -> dict:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state.checkpoint_tree())


def _initial_variables(config: ml_collections.ConfigDict, model, init_fn) -> dict:
  """An orbax checkpoint's variables, or a random init with optionally a torchvision ResNet-50 encoder."""
  if config.init_checkpoint:
    _, restored, step = checkpoint.restore_variables(config.init_checkpoint)
    logging.info('initialised from %s (step %d)', config.init_checkpoint, step)
    restored = jax.device_get(restored)
    if config.model.per_hand_bn_stats:  # a checkpoint without per-hand slots: its blend into both
      restored = copy_shared_stats_to_slots(restored, jax.eval_shape(init_fn))
    return restored
  variables = jax.device_get(init_fn())
  if config.torchvision_resnet50:
    variables, report = import_torchvision_resnet50(load_torch_checkpoint(config.torchvision_resnet50), variables)
    logging.info('encoder from %s: %s', config.torchvision_resnet50, report.summary())
  return variables


def _check_best_metric(best_metric: str) -> None:
  """`config.best_metric` names a metric of a protocol (e.g. 'wrist-scaled-mano-interacting/mpjpe/all')."""
  key, *rest = best_metric.split('/')
  try:
    protocol.Protocol.parse(key)
    problem = '' if len(rest) == 2 else ' (not three parts)'
  except ValueError as e:
    problem = f' ({e})'
  if problem:
    raise ValueError(
        f'config.best_metric={best_metric!r} must be PROTOCOL_KEY/METRIC/HAND, e.g. '
        f'{next(iter(metrics.SETTINGS))}/mpjpe/all{problem}'
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains until `config.num_train_steps` (or `num_epochs`), evaluating and checkpointing on the way.

  Process 0 holds `workdir_lock(workdir)` throughout: a second run on the same workdir refuses to start.

  Returns:
    {'step': last step, 'train': last logged train metrics, 'losses': [(step, loss)] at every log
    step, 'eval': last evaluation results, 'preempted': bool}.
  """
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  mesh = parallel.make_mesh()
  replicated = NamedSharding(mesh, PartitionSpec())
  data_sharding = parallel.data_sharding(mesh)
  if config.batch_size % jax.device_count():
    raise ValueError(f'config.batch_size={config.batch_size} must be divisible by the {jax.device_count()} devices')
  local_batch_size = config.batch_size // jax.process_count()
  _check_batch_norm_groups(config.batch_norm_group_rows, config.batch_size, jax.device_count())

  mano = load_mano_pair(config.mano_dir)
  builder = input_pipeline.get_builder(config.data.data_dir, config.data.dataset_name)
  if input_pipeline.has_single_hand_examples(builder):
    raise ValueError(
        f"config.data.dataset_name={config.data.dataset_name!r} is interhand26m's 'all' config, whose "
        'single-hand examples have no MANO for the other hand; DIR trains on interacting hands: set '
        "config.data.dataset_name='interhand26m' (its 'interacting' config) and evaluate on 'all' "
        'with evaluate.py --config.data.dataset_name=interhand26m/all'
    )
  steps_per_epoch = input_pipeline.train_steps_per_epoch(
      builder, config.data.train_split, local_batch_size, jax.process_count()
  )
  total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
  model = build_model(config)
  tx = state_lib.make_optimizer(config.optimizer, steps_per_epoch, total_steps)

  init_fn = jax.jit(
      lambda: model.init(
          jax.random.PRNGKey(config.seed),
          jnp.zeros((1, config.model.input_size, config.model.input_size, 3)),
          placeholder_mano(),
      )
  )
  make_state = jax.jit(
      lambda v: state_lib.create_train_state(model, tx, None, config.model.input_size, v), out_shardings=replicated
  )
  training = checkpoint.training_facts(config.mano_dir, config.model.input_size)  # remembered by every checkpoint
  ckpt_dir, best_dir = os.path.join(workdir, checkpoint.CHECKPOINTS_DIR), os.path.join(workdir, checkpoint.BEST_DIR)
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.keep_checkpoints)
  _check_best_metric(config.best_metric)
  best_key = f'stage{len(config.model.stages)}/{config.best_metric}'
  best_mngr = checkpoint.manager(
      best_dir, max_to_keep=1, best_fn=lambda m: m[best_key], best_mode='min', keep_checkpoints_without_metrics=False
  )
  if mngr.all_steps():
    state = jax.eval_shape(lambda: make_state(init_fn()))  # structure only; every array is restored
    target = _abstract_state(state, replicated)

    def restore(s):
      return mngr.restore(s, args=checkpoint.restore_state_args(target))[checkpoint.STATE_ITEM]

    start_step, tree = checkpoint.restore_candidates(mngr, restore)
    state = state.replace_from_checkpoint(tree)
    for damaged in [s for s in mngr.all_steps() if s > start_step]:
      logging.warning('deleting unrestorable checkpoint step %d; training resumes from step %d', damaged, start_step)
      mngr.delete(damaged)
    logging.info('resumed from %s step %d', ckpt_dir, start_step)
  else:
    state = make_state(_initial_variables(config, model, init_fn))
    start_step = 0

  train_step = jax.jit(
      bind_train_step(config, model, mano),
      in_shardings=(replicated, data_sharding),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )
  ds = input_pipeline.create_train_dataset(
      builder,
      config.data,
      mano,
      batch_size=local_batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      start_step=start_step,
      label_size=label_grid.label_side(model.config),
  )
  put = functools.partial(parallel.global_batch, sharding=data_sharding)
  batches = DevicePrefetch(input_pipeline.numpy_batches(ds), put, config.device_prefetch_batches)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps
  )
  schedule = state_lib.learning_rate_schedule(config.optimizer, steps_per_epoch, total_steps)
  result: dict[str, Any] = {'step': start_step, 'train': {}, 'losses': [], 'eval': {}, 'preempted': False}
  # The first step whose loss was not finite (0: none yet), kept on the device and read on the host
  # only at log, checkpoint and final steps: no step waits for the previous one to finish.
  first_bad_step = jax.device_put(jnp.zeros((), jnp.int32), replicated)
  track_finite = jax.jit(_first_non_finite_step, donate_argnums=0)
  last_log_time, last_log_step = time.time(), start_step
  logging.info(
      'training steps %d..%d (%d per epoch), global batch %d on %d devices, %d processes',
      start_step,
      total_steps,
      steps_per_epoch,
      config.batch_size,
      jax.device_count(),
      jax.process_count(),
  )
  # One trace and compilation for every evaluation of the run.
  predict_fn = evaluation.make_predict_fn(model, mano, config, builder=builder)

  def run_eval(step):
    results = evaluation.evaluate(
        model, {'params': state.params, 'batch_stats': state.batch_stats}, mano, builder, config, mesh, predict_fn
    )
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.scalar_metrics(results).items()})
    if jax.process_index() == 0:
      with open(os.path.join(workdir, f'metrics_{step}.json'), 'w') as f:
        json.dump(results, f, indent=1)
    logging.info('eval at step %d: %s = %.3f', step, best_key, results[best_key])
    result['eval'] = results
    return results

  if config.eval_at_start and start_step == 0:
    run_eval(0)
  with _PreemptionFlag() as preemption:
    for step in range(start_step + 1, total_steps + 1):
      try:
        batch = next(batches)
      except input_pipeline.READ_ERRORS as e:
        raise _data_error(e, step, builder, config, mngr) from e
      state, step_metrics = train_step(state, batch)
      preemption.arm()
      first_bad_step = track_finite(first_bad_step, step_metrics['loss'], step)
      progress(step)
      log_step = step % config.log_every_steps == 0 or step == total_steps
      save_step = step % config.checkpoint_every_steps == 0 or step == total_steps
      stop = preemption.should_stop(agree=log_step or save_step)
      if log_step or save_step or stop:
        _check_finite(first_bad_step, mngr)
      if log_step:
        scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        scalars['learning_rate'] = float(schedule(step - 1))
        writer.write_scalars(step, scalars)
        now = time.time()
        rate = (step - last_log_step) / max(now - last_log_time, 1e-9)
        eta = (total_steps - step) / max(rate, 1e-9)
        logging.info(
            'step %d/%d  loss %.5f  %.2f steps/s  %.1f images/s  ETA %s',
            step,
            total_steps,
            scalars['loss'],
            rate,
            rate * config.batch_size,
            _format_seconds(eta),
        )
        last_log_time, last_log_step = now, step
        result['train'] = scalars
        result['losses'].append((step, scalars['loss']))
      if save_step or stop:
        mngr.save(step, args=checkpoint.save_args(state.checkpoint_tree(), model, training), force=True)
      if config.eval_every_steps > 0 and (step % config.eval_every_steps == 0 or step == total_steps) and not stop:
        results = run_eval(step)
        best_mngr.save(
            step,
            args=checkpoint.save_args(state.checkpoint_tree(), model, training),
            metrics=metrics.scalar_metrics(results),
            force=True,
        )
      result['step'] = step
      if stop:
        result['preempted'] = True
        logging.warning('stopped by SIGTERM after step %d; checkpoint saved in %s', step, ckpt_dir)
        break
  _check_finite(first_bad_step, mngr)
  writer.flush()
  mngr.wait_until_finished()
  best_mngr.wait_until_finished()
  mngr.close()
  best_mngr.close()
  return result


def bind_train_step(config: ml_collections.ConfigDict, model, mano) -> Callable[..., tuple]:
  """`step_lib.train_step` with the run's model, MANO, losses, sizes and augmentation bound:
  `(state, batch) -> (state, metrics)`, to be jit-compiled."""
  return functools.partial(
      step_lib.train_step,
      model=model,
      mano=mano,
      loss_config=config.loss,
      image_size=config.image_size,
      input_size=config.model.input_size,
      augment=_device_augmentation(config, mano),
      batch_norm_group_rows=config.batch_norm_group_rows,
  )


def _device_augmentation(config: ml_collections.ConfigDict, mano) -> Callable[..., dict] | None:
  """The train step's `augment` when `config.data.augment_on` is 'device' (else None): the batch
  augmented on the device with the run's key (`device_augment.run_key(config.seed)`), at the network's
  input side."""
  if input_pipeline.check_augment_on(config.data) != 'device':
    return None
  return functools.partial(
      device_augment.augment_batch,
      key=device_augment.run_key(config.seed),
      constants=device_augment.DeviceManoConstants.from_host(augment.mano_constants(mano)),
      config=config.data.augment,
      output_size=config.model.input_size,
  )


def _check_batch_norm_groups(rows: int, batch_size: int, device_count: int) -> None:
  """`config.batch_norm_group_rows` is 0 (the global batch) or divides the per-device batch, so that
  every group of BatchNorm statistics lies on one device."""
  per_device = batch_size // device_count
  if rows < 0 or (rows and per_device % rows):
    raise ValueError(
        f'config.batch_norm_group_rows={rows} must be 0 (statistics over the global batch, the reference) '
        f'or divide the per-device batch {per_device} (batch_size {batch_size} over {device_count} devices), '
        f'e.g. {per_device} for per-device statistics'
    )


def _last_good_checkpoint(mngr) -> str:
  mngr.wait_until_finished()
  last = mngr.latest_step()
  return (
      f'the last good checkpoint is step {last} in {mngr.directory}' if last is not None else 'no checkpoint was saved'
  )


def _data_error(error, step: int, builder, config: ml_collections.ConfigDict, mngr) -> TrainingDataError:
  """The error for a failed read of the training data, naming the damaged file(s) of this process's share."""
  split = input_pipeline.process_split(config.data.train_split, jax.process_index(), jax.process_count())
  damaged = input_pipeline.damaged_files(builder, split)
  files = '; '.join(f'{path} ({message})' for path, message in damaged) or 'no file fails a full re-read'
  return TrainingDataError(
      f'reading the training data failed before step {step} ({type(error).__name__}: '
      f'{str(error).splitlines()[0] if str(error) else ""}). Damaged TFRecord files of {config.data.train_split!r}: '
      f'{files}; {_last_good_checkpoint(mngr)}. Rebuild the dataset (tfds build '
      'data_prep/interhand26m) or restore those files, then restart: the run resumes from that checkpoint.'
  )


def _first_non_finite_step(first_bad_step: jax.Array, loss: jax.Array, step: int) -> jax.Array:
  """`first_bad_step`, or `step` when it is still 0 and `loss` is not finite (a scalar int32)."""
  return jnp.where((first_bad_step == 0) & ~jnp.isfinite(loss), jnp.int32(step), first_bad_step)


def _check_finite(first_bad_step: jax.Array, mngr) -> None:
  """Raises NonFiniteLossError when a step's loss was not finite (`_first_non_finite_step`)."""
  step = int(jax.device_get(first_bad_step))
  if step:
    raise NonFiniteLossError(
        f'loss is not finite at step {step}; {_last_good_checkpoint(mngr)}. Lower '
        'config.optimizer.learning_rate or check the data, then restart (the run resumes '
        'from that checkpoint).'
    )


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'
