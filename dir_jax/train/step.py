"""The jit-compiled training and evaluation steps (pure functions of state and batch)."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dir_jax import losses
from dir_jax.data.normalize import normalize_image
from dir_jax.mano import ManoPair
from dir_jax.model.dir import DIR
from dir_jax.train.state import TrainState
from dir_jax.train.targets import ground_truth


def model_input(batch: dict, input_size: int, dtype=jnp.float32):
  """ImageNet-normalised images resized to the model's input size (uv targets are size-free)."""
  images = normalize_image(batch['image'], jnp.float32)
  if images.shape[1] != input_size:
    images = jax.image.resize(images, (images.shape[0], input_size, input_size, 3), 'linear', antialias=True)
  return images.astype(dtype)


def train_step(state: TrainState, batch: dict, *, model: DIR, mano: ManoPair, loss_config: ml_collections.ConfigDict,
               image_size: int, input_size: int) -> tuple[TrainState, dict[str, Any]]:
  """One optimizer step on a (globally sharded) batch.

  BatchNorm statistics are means over the batch axis; under `jit` with the batch sharded over the
  mesh they are global-batch statistics, as one big batch on one device.

  Returns:
    (new state, metrics: every loss term, `loss` (their sum), `learning_rate` not included).
  """
  targets = ground_truth(batch, mano, image_size)
  images = model_input(batch, input_size, model.dtype or jnp.float32)

  def loss_fn(params):
    outputs, updates = model.apply({'params': params, 'batch_stats': state.batch_stats}, images, mano,
                                   train=True, mutable=['batch_stats'])
    terms = losses.dir_losses(outputs, targets, mano.left.faces, mano.right.faces, loss_config,
                              center_idx=model.config.center_idx)
    return losses.total_loss(terms), (terms, updates['batch_stats'])

  (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = dict(terms, loss=loss, grad_norm=optax.global_norm(grads))
  return state.apply_gradients(grads, batch_stats), metrics


def predict_step(variables: dict, batch: dict, *, model: DIR, mano: ManoPair, image_size: int,
                 input_size: int) -> dict[str, Any]:
  """Eval-mode predictions of every stage plus the ground truth the metrics need.

  Returns:
    `stages`: per stage {mesh_xyz_<side> (B,778,3) m centred at the model's center joint,
    joint_xyz_<side>, offset (B,3) in 0.15 m}; `gt`: {mesh_3d_<side>, joint_3d_<side>} camera frame m.
  """
  images = model_input(batch, input_size, model.dtype or jnp.float32)
  outputs = model.apply(variables, images, mano, train=False)
  keep = ('mesh_xyz_left', 'mesh_xyz_right', 'joint_xyz_left', 'joint_xyz_right', 'offset')
  stages = [{k: stage[k].astype(jnp.float32) for k in keep} for stage in outputs['stages']]
  targets = ground_truth(batch, mano, image_size)
  gt = {k: targets[k] for k in ('mesh_3d_left', 'mesh_3d_right', 'joint_3d_left', 'joint_3d_right')}
  return {'stages': stages, 'gt': gt}
