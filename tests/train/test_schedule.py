"""The learning-rate schedule: the reference's cosine (per epoch or per step) and the optional warm-up."""

import ml_collections
import numpy as np
import optax
import pytest

from dir_jax.train import state as state_lib


def _config(**overrides):
  config = ml_collections.ConfigDict(
      dict(learning_rate=5e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, schedule_unit='step', warmup_steps=0)
  )
  config.update(overrides)
  return config


def test_epoch_cosine_is_constant_within_an_epoch_and_follows_the_epochs():
  schedule = state_lib.learning_rate_schedule(_config(schedule_unit='epoch'), steps_per_epoch=10, total_steps=50)
  cosine = optax.cosine_decay_schedule(5e-4, 5)
  for step in range(50):
    np.testing.assert_allclose(schedule(step), cosine(step // 10), rtol=1e-6)


def test_warmup_ramps_the_cosine_linearly_then_leaves_it():
  total, warmup = 100, 8
  plain = state_lib.learning_rate_schedule(_config(), 10, total)
  warmed = state_lib.learning_rate_schedule(_config(warmup_steps=warmup), 10, total)
  for step in range(total):
    factor = min(1.0, (step + 1) / warmup)
    np.testing.assert_allclose(warmed(step), plain(step) * factor, rtol=1e-6)
  assert warmed(0) == pytest.approx(5e-4 / warmup, rel=1e-4)
  assert warmed(warmup - 1) == pytest.approx(float(plain(warmup - 1)), rel=1e-6)


def test_bad_schedule_settings_are_refused():
  with pytest.raises(ValueError, match="schedule_unit must be 'epoch' or 'step'"):
    state_lib.learning_rate_schedule(_config(schedule_unit='linear'), 10, 100)
  with pytest.raises(ValueError, match='warmup_steps must be >= 0'):
    state_lib.learning_rate_schedule(_config(warmup_steps=-1), 10, 100)
