"""Training with the tiny config: the loss falls, 8 devices equal 1, two processes train together,
a run stopped by SIGTERM (its newest checkpoint then damaged) and killed with SIGKILL resumes to the
uninterrupted result, one run per workdir, early SIGTERM, damaged training shards, NaN losses."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import tiny
from dir_jax import checkpoint, demo, inference, metrics, protocol
from dir_jax.data import input_pipeline
from dir_jax.mano import load_mano_pair
from dir_jax.train import trainer
from tests.train.conftest import NUM_TEST, REPO_ROOT, tiny_overrides, train_env

# Float tolerance between device layouts: the same math with the batch split over 8 devices sums the
# BatchNorm statistics and gradients in another order; train-mode BatchNorm over a batch of 8 amplifies
# that rounding through the stages (measured 1.5e-4 relative on the first loss, as the reference
# fixture's train mode, see compare_reference's 1e-3), so 1e-3 relative.
DEVICE_LAYOUT_RTOL = 1e-3
LAYOUT_TEST_LR = 1e-6
# Running statistics after 3 steps, relative to each array's scale. The test model projects joint
# features as Gaussian heatmaps ('mhp'), which are continuous in the joints: with the released 'bone'
# projection a mask cell at its threshold can flip under rounding differences and change stage-2
# features discretely (compare_reference's "Discontinuities"; measured 3.5e-3 and 1.2e-2 of the scale
# in two runs), which says nothing about the device layout.
BN_STATS_LAYOUT_TOL = 1e-2
LAYOUT_TEST_PROJECTION = 'mhp'


def _config(data, **overrides):
  config = tiny.get_config()
  config.mano_dir, config.data.data_dir = data['mano'], data['tfds']
  for key, value in overrides.items():
    config[key] = value
  return config


def _final_params(workdir):
  _, variables, step = checkpoint.restore_variables(workdir)
  return step, jax.device_get(variables)


def _train_cmd(workdir, data, **extra):
  return [
      sys.executable,
      os.path.join(REPO_ROOT, 'train.py'),
      '--config=' + os.path.join(REPO_ROOT, 'configs/tiny.py'),
      f'--workdir={workdir}',
  ] + tiny_overrides(data, **extra)


def _run_and_signal(workdir, data, env, trigger, sig, **extra):
  """Runs train.py and sends `sig` at the first log line containing `trigger`: (return code, log lines)."""
  proc = subprocess.Popen(
      _train_cmd(workdir, data, **extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  log, sent = [], False
  for line in proc.stdout:
    log.append(line)
    if not sent and trigger in line:
      proc.send_signal(sig)
      sent = True
  return proc.wait(timeout=600), log


def test_tiny_training_lowers_the_loss_and_evaluates(tiny_data, compilation_cache, tmp_path, monkeypatch):
  # eval_voxel_m: the interpenetration volume, computed in the compiled evaluation step.
  config = _config(tiny_data, num_train_steps=12, eval_at_start=True, eval_every_steps=12, eval_voxel_m=0.005)
  for switch in ('flip', 'rotate', 'zoom', 'translate', 'motion_blur', 'color'):
    config.data.augment[switch] = False
  workdir = str(tmp_path / 'run')
  # Two evaluations (steps 0 and 12), one trace of the predict step.
  monkeypatch.setattr(inference, 'predict_step', chex.assert_max_traces(inference.predict_step, n=1))
  result = trainer.train_and_evaluate(config, workdir)
  losses = [loss for _, loss in result['losses']]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  step, _ = _final_params(workdir)
  assert step == 12
  # Evaluation at initialisation and at the end: every test example once, metrics of every stage.
  with open(os.path.join(workdir, 'metrics_0.json')) as f:
    initial = json.load(f)
  final = result['eval']
  assert initial['num_samples'] == final['num_samples'] == NUM_TEST
  dir_key, triangulated_key = protocol.DIR.key, protocol.INTERHAND26M_INTERACTING.key
  assert all(np.isfinite(final[f'stage{s}/{dir_key}/mpjpe/all']) for s in range(3))
  assert all(np.isfinite(final[f'stage{s}/iv/all']) and final[f'stage{s}/iv/all'] >= 0 for s in range(3))
  # The dataset stores triangulated joints: the InterHand2.6M setting is computed too, named in words.
  assert final[f'stage2/{triangulated_key}/num_samples'] == NUM_TEST
  assert np.isfinite(final[f'stage2/{triangulated_key}/mpjpe/all'])
  assert final['protocols'][triangulated_key] == 'wrist, unscaled, triangulated joints, interacting'
  assert os.listdir(os.path.join(workdir, 'best')) == ['12']
  for location in (workdir, os.path.join(workdir, 'best', '12')):  # both remember the run's MANO folder and input
    restored = checkpoint.restore_checkpoint(location)
    assert restored.mano_dir == os.path.abspath(tiny_data['mano']) and restored.input_size_px == 64
  # The demo's pictures and summary from this run.
  rows, following = demo.held_out_report(workdir, config, num_images=NUM_TEST, batch_size=3)  # rows of two batches
  # input | initial | stage 1 | stage 2 | ground truth
  assert len(rows) == NUM_TEST and rows[0].dtype == np.uint8 and rows[0].shape[1] >= 5 * config.image_size
  assert following['num_images'] == NUM_TEST
  for side in ('left', 'right'):
    assert -1.0 <= following[side]['correlation'] <= 1.0 and following[side]['error_px'].shape == (NUM_TEST,)
    assert following[side]['true_spread_px'] > 0
  assert demo.following_lines(following).startswith('held-out 2D root correlation: ')
  # The per-hand BatchNorm report's evaluation path, on this run without slots: both columns agree.
  monkeypatch.undo()  # it builds its own predict step
  rows = [line.split(' | ') for line in demo.per_hand_bn_effect(workdir, config, final).splitlines()[2:]]
  assert len(rows) == 3 and all(row[1] == row[2].rstrip(' |') for row in rows), rows
  table = demo.summary_table(initial, final, stage=2)
  key = f'stage2/{dir_key}/mpjpe/all'
  assert f'{initial[key]:.2f}' in table and f'{final[key]:.2f}' in table
  assert f'| MPJPE (mm), {protocol.DIR.name} |' in table
  # evaluate.py on the run over the 'all' config (the interacting test examples plus two single-hand
  # ones and one with hand_type_valid false), with protocols on the single-hand subset and on a
  # human_annot list naming the 'interacting' config's test examples: on those the triangulated
  # errors are the ones the training run computed.
  interacting_ids = sorted(
      int(ex['image_id'])
      for ex in input_pipeline.get_builder(tiny_data['tfds']).as_dataset(split='test').as_numpy_iterator()
  )
  builder = input_pipeline.get_builder(tiny_data['tfds'], 'interhand26m/all')
  hand_types = {
      int(ex['image_id']): ex['hand_type'].decode() for ex in builder.as_dataset(split='test').as_numpy_iterator()
  }
  assert sorted(hand_types.values()) == ['interacting'] * (NUM_TEST + 1) + ['left', 'right']
  assert set(interacting_ids) < set(hand_types)
  ids_file = tmp_path / 'aid_human_annot_test.txt'
  ids_file.write_text(''.join(f'{i}\n' for i in interacting_ids))
  human, single = protocol.INTERHAND26M_HUMAN_ANNOT.key, protocol.INTERHAND26M_SINGLE.key
  out_dir = tmp_path / 'eval'
  run = subprocess.run(
      [
          sys.executable,
          os.path.join(REPO_ROOT, 'evaluate.py'),
          f'--checkpoint={workdir}',
          '--config=' + os.path.join(REPO_ROOT, 'configs/tiny.py'),
          f'--out={out_dir}',
          f'--protocol={dir_key}',
          f'--protocol={human}',
          f'--protocol={single}',
          f'--human_annot={ids_file}',
          '--compilation_cache=' + compilation_cache,
          '--config.data.dataset_name=interhand26m/all',
      ]
      + tiny_overrides(tiny_data),
      env=train_env(compilation_cache),
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert run.returncode == 0, run.stdout + run.stderr
  with open(out_dir / 'metrics.json') as f:
    evaluated = json.load(f)
  assert evaluated['protocols'] == {
      dir_key: protocol.DIR.name,
      human: protocol.INTERHAND26M_HUMAN_ANNOT.name,
      single: protocol.INTERHAND26M_SINGLE.name,
      metrics.PROCRUSTES_KEY: metrics.PROCRUSTES_NAME,
  }
  assert evaluated['num_samples'] == NUM_TEST + 3
  assert evaluated[f'stage2/{dir_key}/num_samples'] == NUM_TEST + 1  # hand_type_valid false is interacting too
  assert evaluated[f'stage2/{human}/num_samples'] == NUM_TEST and evaluated[f'stage2/{single}/num_samples'] == 2
  assert len(evaluated[f'stage2/{human}/joint_errors_mm/left']) == 21
  assert evaluated[f'stage2/{human}/mpjpe/all'] == pytest.approx(
      final[f'stage2/{triangulated_key}/mpjpe/all'], rel=1e-5
  )
  assert all(np.isfinite(evaluated[f'stage2/{single}/mpjpe/{h}']) for h in metrics.HANDS)
  written = (out_dir / 'metrics.md').read_text()
  assert protocol.INTERHAND26M_HUMAN_ANNOT.name in written and '| InterWild | mpjpe_sh_ih_mean | 13.65 |' in written


def _logged_losses(log: str) -> dict[int, float]:
  return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r'step (\d+)/\d+  loss ([0-9.]+)', log)}


def test_eight_fake_devices_match_one(tiny_data, compilation_cache, tmp_path):
  """With the augmentation on the device: its draws are keyed by global row, not by device."""
  results, losses = {}, {}
  for devices in (1, 8):
    workdir = str(tmp_path / f'dev{devices}')
    # A small learning rate: AdamW's first steps are lr * sign(gradient), which turns rounding-level
    # differences of near-zero gradients into parameter differences of the size of the step.
    run = subprocess.run(
        _train_cmd(
            workdir,
            tiny_data,
            batch_size=8,
            num_train_steps=3,
            **{
                'optimizer.learning_rate': LAYOUT_TEST_LR,
                'model.projection': LAYOUT_TEST_PROJECTION,
                'data.augment_on': 'device',
            },
        ),
        env=train_env(compilation_cache, devices),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f'on {devices} devices' in run.stderr
    losses[devices] = _logged_losses(run.stderr)
    results[devices] = _final_params(workdir)
  assert sorted(losses[1]) == sorted(losses[8]) == [1, 2, 3]
  for step in (1, 2, 3):
    np.testing.assert_allclose(losses[8][step], losses[1][step], rtol=DEVICE_LAYOUT_RTOL)
  assert results[1][0] == results[8][0] == 3
  # BatchNorm running statistics are global-batch statistics on 8 devices as on 1 (tolerance relative
  # to each array's scale: some entries are near 0).
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=BN_STATS_LAYOUT_TOL * np.abs(b).max()),
      results[1][1]['batch_stats'],
      results[8][1]['batch_stats'],
  )
  # Parameters: equal up to the sign flips above; an AdamW step is at most ~2 lr here, so 2 * 2 lr per step.
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=3 * 4 * LAYOUT_TEST_LR),
      results[1][1]['params'],
      results[8][1]['params'],
  )


def test_two_processes_train_one_step_together(tiny_data, compilation_cache, tmp_path):
  port = 20000 + os.getpid() % 20000
  workdir = str(tmp_path / 'multi')
  procs = [
      subprocess.Popen(
          _train_cmd(workdir, tiny_data, batch_size=8, num_train_steps=1)
          + [f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
          env=train_env(compilation_cache),
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert all('process 1/2' in out or 'process 0/2' in out for out in outputs)
  step, _ = _final_params(workdir)
  assert step == 1


def _damage_step(workdir, step):
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step), checkpoint.STATE_ITEM)):
    for name in files:
      if name != 'commit_success.txt':
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'\0')


def test_sigterm_damaged_checkpoint_and_kill_9_resume_to_the_same_parameters(tiny_data, compilation_cache, tmp_path):
  """With the augmentation on the device (keyed by the step), so that resuming repeats its draws; the host
  stream's exact resumption is tested in tests/data/test_input_pipeline.py."""
  total = 8
  device_augmentation = {'data.augment_on': 'device'}
  reference_dir, resumed_dir = str(tmp_path / 'uninterrupted'), str(tmp_path / 'resumed')
  subprocess.run(
      _train_cmd(reference_dir, tiny_data, num_train_steps=total, **device_augmentation),
      check=True,
      env=train_env(compilation_cache),
      capture_output=True,
  )
  returncode, log = _run_and_signal(
      resumed_dir,
      tiny_data,
      train_env(compilation_cache),
      f'step 5/{total}',
      signal.SIGTERM,
      num_train_steps=total,
      **device_augmentation,
  )
  assert returncode == 0, ''.join(log[-40:])
  assert any('stopped by SIGTERM' in line for line in log), ''.join(log[-40:])
  steps = sorted(int(s) for s in os.listdir(os.path.join(resumed_dir, 'checkpoints')) if s.isdigit())
  stopped_at = steps[-1]
  assert 5 <= stopped_at < total
  _damage_step(resumed_dir, stopped_at)
  # The rerun skips the damaged step, then is killed with SIGKILL (no handler, no save) one step on.
  returncode, log = _run_and_signal(
      resumed_dir,
      tiny_data,
      train_env(compilation_cache),
      f'step {stopped_at + 1}/{total}',
      signal.SIGKILL,
      num_train_steps=total,
      **device_augmentation,
  )
  assert any(f'step {stopped_at} in' in line and 'cannot be restored' in line for line in log), ''.join(log[-40:])
  rerun = subprocess.run(
      _train_cmd(resumed_dir, tiny_data, num_train_steps=total, **device_augmentation),
      env=train_env(compilation_cache),
      capture_output=True,
      text=True,
  )
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  ref_step, ref_params = _final_params(reference_dir)
  res_step, res_params = _final_params(resumed_dir)
  assert ref_step == res_step == total
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ref_params, res_params)


def test_training_refuses_the_all_config(tiny_data, tmp_path):
  """interhand26m/all holds single-hand examples without the other hand's MANO: no training on it."""
  config = _config(tiny_data)
  config.data.dataset_name = 'interhand26m/all'
  with pytest.raises(ValueError, match="interhand26m's 'all' config.*DIR trains on interacting hands"):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_training_refuses_batch_norm_groups_that_straddle_devices(tiny_data, tmp_path):
  """config.batch_norm_group_rows must divide the per-device batch (tiny: 4 rows on 1 device)."""
  config = _config(tiny_data, batch_norm_group_rows=3)
  with pytest.raises(ValueError, match=r'batch_norm_group_rows=3 must be 0 .* or divide the per-device batch 4'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_the_bound_train_step_takes_the_configs_augmentation_and_batch_norm_groups(tiny_data):
  config = _config(tiny_data, batch_norm_group_rows=2)
  config.data.augment_on = 'device'
  model, mano = trainer.build_model(config), load_mano_pair(config.mano_dir)
  bound = trainer.bind_train_step(config, model, mano)
  assert bound.keywords['batch_norm_group_rows'] == 2
  augment = bound.keywords['augment']
  assert (
      augment.keywords['output_size'] == config.model.input_size and augment.keywords['config'] is config.data.augment
  )
  config.data.augment_on = 'host'
  assert trainer.bind_train_step(config, model, mano).keywords['augment'] is None


def test_non_finite_loss_names_the_step_and_checkpoint(tiny_data, compilation_cache, tmp_path, monkeypatch):
  """The loss is read on the host only at log and checkpoint steps (here step 3), yet the error names
  the first step whose loss was not finite (step 2: step 1 updates with a huge learning rate)."""
  config = _config(tiny_data, num_train_steps=6, log_every_steps=3, checkpoint_every_steps=6)
  config.optimizer.learning_rate = 1e30
  checks = []
  monkeypatch.setattr(trainer, '_check_finite', lambda *a, _check=trainer._check_finite: (checks.append(1), _check(*a)))
  with pytest.raises(trainer.NonFiniteLossError, match=r'at step 2; .*checkpoint'):
    trainer.train_and_evaluate(config, str(tmp_path / 'nan'))
  assert len(checks) == 1


def test_a_second_run_on_one_workdir_refuses_and_a_killed_holder_frees_it(tiny_data, tmp_path):
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with trainer.workdir_lock(workdir):
    with pytest.raises(trainer.WorkdirInUseError, match=rf'is in use by another training run \(pid {os.getpid()} '):
      trainer.train_and_evaluate(_config(tiny_data, num_train_steps=1), workdir)
  holder = subprocess.Popen(
      [
          sys.executable,
          '-c',
          'import sys, time\nfrom dir_jax.train import trainer\n'
          'held = trainer.workdir_lock(sys.argv[1])\nheld.__enter__()\nprint("locked", flush=True)\ntime.sleep(600)',
          workdir,
      ],
      env=dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu'),
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(trainer.WorkdirInUseError, match=f'pid {holder.pid} '):
      with trainer.workdir_lock(workdir):
        pass
  finally:
    holder.kill()  # SIGKILL: no clean-up runs in the holder
    holder.wait()
  with trainer.workdir_lock(workdir):  # the operating system released the dead holder's lock
    pass


def test_sigterm_during_the_first_compile_stops_at_once(tiny_data, tmp_path):
  """Nothing new to save before the first step: the process ends by SIGTERM without finishing the
  compile or writing a checkpoint (an empty compilation cache keeps it compiling when the signal comes)."""
  workdir = str(tmp_path / 'early')
  returncode, log = _run_and_signal(
      workdir, tiny_data, train_env(str(tmp_path / 'empty_cache')), 'training steps', signal.SIGTERM, num_train_steps=4
  )
  assert returncode == -signal.SIGTERM, ''.join(log[-40:])
  assert not any('saving a checkpoint' in line for line in log)
  checkpoints = os.path.join(workdir, 'checkpoints')
  assert not [s for s in (os.listdir(checkpoints) if os.path.isdir(checkpoints) else []) if s.isdigit()]


@pytest.mark.parametrize('damage', ['flipped bytes', 'truncated'])
def test_a_damaged_training_shard_stops_the_run_naming_it(tiny_data, compilation_cache, tmp_path, damage):
  data_dir = str(tmp_path / 'tfds')
  shutil.copytree(tiny_data['tfds'], data_dir)
  # The config the run reads ('interacting', the default); data_dir holds the 'all' config too.
  shards = sorted(
      glob.glob(os.path.join(data_dir, 'interhand26m', 'interacting', '**', '*-train.tfrecord-*'), recursive=True)
  )
  assert shards
  with open(shards[0], 'rb') as f:
    content = bytearray(f.read())
  if damage == 'truncated':
    content = content[: len(content) * 2 // 3]
  else:
    middle = len(content) // 2
    content[middle : middle + 16] = bytes(255 - b for b in content[middle : middle + 16])
  with open(shards[0], 'wb') as f:
    f.write(bytes(content))
  config = _config(dict(tiny_data, tfds=data_dir), num_train_steps=3)
  with pytest.raises(trainer.TrainingDataError, match=re.escape(shards[0]) + r'.*no checkpoint was saved'):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))


def test_device_prefetch_keeps_order_and_raises_read_errors_in_turn():
  """DevicePrefetch puts `size` batches ahead, yields them in order, and raises a read error only when
  the failing batch's turn comes (the steps before it still run)."""
  read_error = trainer.input_pipeline.READ_ERRORS[0](None, None, 'damaged record', 15)  # DATA_LOSS
  put = []

  def source():
    yield from ({'x': np.array([i])} for i in range(3))
    raise read_error

  batches = trainer.DevicePrefetch(source(), lambda b: put.append(int(b['x'][0])) or b, size=2)
  assert int(next(batches)['x'][0]) == 0 and put == [0, 1, 2]  # two ahead of the consumed one
  assert [int(next(batches)['x'][0]) for _ in range(2)] == [1, 2]
  with pytest.raises(type(read_error), match='damaged record'):
    next(batches)
  with pytest.raises(StopIteration):
    next(batches)
  assert [int(b['x'][0]) for b in trainer.DevicePrefetch(iter([{'x': np.array([7])}]), lambda b: b, size=0)] == [7]
  with pytest.raises(ValueError, match='>= 0'):
    trainer.DevicePrefetch(iter([]), lambda b: b, size=-1)
