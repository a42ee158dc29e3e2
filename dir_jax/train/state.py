"""Train state, optimizer and learning-rate schedule (AdamW, cosine decay to 0).

The released recipe: docs/architecture.md#training.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from dir_jax.model.dir import DIR, placeholder_mano


class TrainState(train_state.TrainState):
  """flax's `TrainState` (step, params, `tx`, opt_state; `apply_fn` is the model's `apply`) plus the
  BatchNorm running statistics. One optimizer step: `apply_gradients(grads=..., batch_stats=...)`,
  with the statistics from the forward that made the gradients."""

  batch_stats: Any = None

  def checkpoint_tree(self) -> dict:
    """The state as `dir_jax.checkpoint` stores it ('variables' first, so inference restores only it)."""
    return {
        'variables': {'params': self.params, 'batch_stats': self.batch_stats},
        'opt_state': self.opt_state,
        'step': self.step,
    }

  def replace_from_checkpoint(self, tree: dict) -> 'TrainState':
    return self.replace(
        step=tree['step'],
        params=tree['variables']['params'],
        batch_stats=tree['variables']['batch_stats'],
        opt_state=tree['opt_state'],
    )


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
  """Cosine decay from `config.learning_rate` to 0, optionally warmed up.

  `config.schedule_unit == 'epoch'` reproduces the reference's CosineAnnealingLR stepped once per
  epoch (constant within an epoch, T_max = num_epochs); 'step' decays smoothly per step.
  `config.warmup_steps` > 0 multiplies the first steps by a linear ramp (step + 1) / warmup_steps (for
  large global batches, README "Pod recipe"); 0 (the reference) leaves the cosine as it is.
  """
  if config.schedule_unit == 'epoch':
    epochs = max(1, -(-total_steps // steps_per_epoch))
    per_epoch = optax.cosine_decay_schedule(config.learning_rate, epochs)
    cosine = lambda step: per_epoch(step // steps_per_epoch)
  elif config.schedule_unit == 'step':
    cosine = optax.cosine_decay_schedule(config.learning_rate, total_steps)
  else:
    raise ValueError(f"config.optimizer.schedule_unit must be 'epoch' or 'step', got {config.schedule_unit!r}")
  warmup_steps = config.get('warmup_steps', 0)
  if warmup_steps < 0:
    raise ValueError(f'config.optimizer.warmup_steps must be >= 0, got {warmup_steps}')
  if not warmup_steps:
    return cosine
  return lambda step: cosine(step) * jnp.minimum(1.0, (step + 1) / warmup_steps)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int):
  """AdamW with PyTorch's defaults (decoupled weight decay on every parameter, as the reference)."""
  return optax.adamw(
      learning_rate_schedule(config, steps_per_epoch, total_steps),
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
      weight_decay=config.weight_decay,
  )


def create_train_state(
    model: DIR, tx: optax.GradientTransformation, rng: jax.Array, image_size: int, variables: dict | None = None
) -> TrainState:
  """A fresh state (random init, or `variables` when given) with zero optimizer moments."""
  if variables is None:
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    variables = model.init(rng, images, placeholder_mano())
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      apply_fn=model.apply,
      params=params,
      tx=tx,
      opt_state=tx.init(params),
      batch_stats=batch_stats,
  )
