"""The training step (a pure function of state and batch; the evaluation step is `dir_jax.inference`)."""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dir_jax import inference, losses
from dir_jax.mano import ManoPair
from dir_jax.model import layers
from dir_jax.model.dir import DIR
from dir_jax.train.state import TrainState
from dir_jax.train.targets import ground_truth


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model: DIR,
    mano: ManoPair,
    loss_config: ml_collections.ConfigDict,
    image_size: int,
    input_size: int,
    augment: Callable[..., dict] | None = None,
    batch_norm_group_rows: int = 0,
) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer step on a (globally sharded) batch.

  BatchNorm statistics are means over the batch axis; under `jit` with the batch sharded over the
  mesh they are global-batch statistics, as one big batch on one device. `batch_norm_group_rows` > 0
  takes them over groups of that many consecutive rows instead (`layers.batch_stat_groups`; the
  per-device batch gives per-device statistics).

  `augment`: None (the batch comes augmented, or is not to be) or `augment(batch, step=...)` applied to
  the batch first with the step's number (`state.step`, 0 for the first step), e.g.
  `device_augment.augment_batch` with its key, constants and config bound: keys of (seed, step, row),
  rows numbered over the global batch, so the draws do not depend on the device layout.

  Returns:
    (new state, metrics: every loss term, `loss` (their sum), `learning_rate` not included).
  """
  if augment is not None:
    batch = augment(batch, step=state.step)
  targets = ground_truth(batch, mano, image_size)
  images = inference.model_input(batch['image'], input_size, model.dtype or jnp.float32)

  def loss_fn(params):
    with layers.batch_stat_groups(batch_norm_group_rows):
      outputs, updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images, mano, train=True, mutable=['batch_stats']
      )
    terms = losses.dir_losses(
        outputs, targets, mano.left.faces, mano.right.faces, loss_config, center_idx=model.config.center_idx
    )
    return losses.total_loss(terms), (terms, updates['batch_stats'])

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = dict(terms, loss=loss, grad_norm=optax.global_norm(grads))
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics
