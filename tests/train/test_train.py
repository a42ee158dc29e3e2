"""Training with the tiny config: the loss falls, 8 devices equal 1, two processes train together,
and a run killed by SIGTERM (with its newest checkpoint damaged) resumes to the uninterrupted result."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from dir_jax import checkpoint
from dir_jax.train import trainer
from tests.train.conftest import REPO_ROOT, tiny_overrides, train_env

# Float tolerance between device layouts: the same math with the batch split over 8 devices sums the
# BatchNorm statistics and gradients in another order (float32 rounding, ~1e-6 relative per step).
DEVICE_LAYOUT_RTOL = 1e-4


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
  return [sys.executable, os.path.join(REPO_ROOT, 'train.py'), '--config=' + os.path.join(REPO_ROOT, 'configs/tiny.py'),
          f'--workdir={workdir}'] + tiny_overrides(data, **extra)


def test_tiny_training_lowers_the_loss(tiny_data, compilation_cache, tmp_path):
  config = _config(tiny_data, num_train_steps=12)
  for switch in ('flip', 'rotate', 'zoom', 'translate', 'motion_blur', 'color'):
    config.data.augment[switch] = False
  result = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  losses = [loss for _, loss in result['losses']]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
  step, _ = _final_params(str(tmp_path / 'run'))
  assert step == 12


def test_eight_fake_devices_match_one(tiny_data, compilation_cache, tmp_path):
  results = {}
  for devices in (1, 8):
    workdir = str(tmp_path / f'dev{devices}')
    subprocess.run(_train_cmd(workdir, tiny_data, batch_size=8, num_train_steps=2), check=True,
                   env=train_env(compilation_cache, devices), capture_output=True)
    results[devices] = _final_params(workdir)
  assert results[1][0] == results[8][0] == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=DEVICE_LAYOUT_RTOL, atol=1e-6),
               results[1][1], results[8][1])


def test_two_processes_train_one_step_together(tiny_data, compilation_cache, tmp_path):
  port = 20000 + os.getpid() % 20000
  workdir = str(tmp_path / 'multi')
  procs = [subprocess.Popen(
      _train_cmd(workdir, tiny_data, batch_size=8, num_train_steps=1) +
      [f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
      env=train_env(compilation_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
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


def test_sigterm_and_damaged_checkpoint_resume_to_the_same_parameters(tiny_data, compilation_cache, tmp_path):
  total = 8
  reference_dir, resumed_dir = str(tmp_path / 'uninterrupted'), str(tmp_path / 'resumed')
  subprocess.run(_train_cmd(reference_dir, tiny_data, num_train_steps=total), check=True,
                 env=train_env(compilation_cache), capture_output=True)
  proc = subprocess.Popen(_train_cmd(resumed_dir, tiny_data, num_train_steps=total), env=train_env(compilation_cache),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  log = []
  for line in proc.stdout:
    log.append(line)
    if f'step 5/{total}' in line:
      proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=600) == 0, ''.join(log[-40:])
  assert any('stopped by SIGTERM' in line for line in log), ''.join(log[-40:])
  steps = sorted(int(s) for s in os.listdir(os.path.join(resumed_dir, 'checkpoints')) if s.isdigit())
  stopped_at = steps[-1]
  assert 5 <= stopped_at < total
  _damage_step(resumed_dir, stopped_at)
  rerun = subprocess.run(_train_cmd(resumed_dir, tiny_data, num_train_steps=total), env=train_env(compilation_cache),
                         capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'step {stopped_at} in' in rerun.stderr and 'cannot be restored' in rerun.stderr
  ref_step, ref_params = _final_params(reference_dir)
  res_step, res_params = _final_params(resumed_dir)
  assert ref_step == res_step == total
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ref_params, res_params)


def test_non_finite_loss_names_the_step_and_checkpoint(tiny_data, compilation_cache, tmp_path):
  config = _config(tiny_data, num_train_steps=4)
  config.optimizer.learning_rate = 1e30
  with pytest.raises(trainer.NonFiniteLossError, match=r'at step \d+; .*checkpoint'):
    trainer.train_and_evaluate(config, str(tmp_path / 'nan'))
