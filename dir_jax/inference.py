"""Eval-mode inference, one path for every caller: the trainer's evaluation, `evaluate.py`, `predict`, the demo.

Map: docs/architecture.md#inference.

- `input_side_px` / `trained_input_side_px`: the network's input side (the rule and where it came from).
- `model_input`: uint8 images of any square side -> the ImageNet-normalised input at the network's side.
- `forward`: eval-mode outputs of `DIR` for uint8 images; `make_forward` jit-compiles it once.
- `predict_step` / `make_predict_fn`: the evaluation step (every stage's per-sample errors, computed
  from its 3D outputs and the ground truth), compiled once per run so that periodic evaluations reuse
  one trace.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dir_jax.data.normalize import normalize_image
from dir_jax.mano import ManoPair
from dir_jax.model.config import ModelConfig
from dir_jax.model.dir import DIR
from dir_jax.train.targets import ground_truth

INPUT_PX_PER_CELL = 16  # the network's input side is 16x its first stage's grid (256 for 16x16)
_EVAL_KEYS = ('mesh_xyz_left', 'mesh_xyz_right', 'offset')  # what the per-sample errors read of a stage


def input_side_px(config: ModelConfig) -> int:
  """The input side the architecture implies: 16x the first stage's grid (256 for the released model)."""
  return config.stages[0].size * INPUT_PX_PER_CELL


def trained_input_side_px(config: ModelConfig, recorded_px: int | None) -> tuple[int, str]:
  """(input side, where it came from): the side a checkpoint recorded (`train.py` records it), else the
  architecture's `input_side_px` (the authors' converted checkpoint and older checkpoints record none)."""
  if recorded_px is not None:
    return int(recorded_px), 'recorded in the checkpoint'
  return input_side_px(config), f"16x the first stage's grid {config.stages[0].size}"


def model_input(images_u8: jax.Array, input_size: int, dtype=jnp.float32) -> jax.Array:
  """(B, H, H, 3) uint8 RGB -> (B, input_size, input_size, 3) ImageNet-normalised in `dtype`.

  A different side is resized with antialiased bilinear resampling (uv targets are size-free).
  """
  images = normalize_image(images_u8, jnp.float32)
  if images.shape[1] != input_size:
    images = jax.image.resize(images, (images.shape[0], input_size, input_size, 3), 'linear', antialias=True)
  return images.astype(dtype)


def forward(variables: dict, images_u8: jax.Array, mano: ManoPair, *, model: DIR, input_size: int) -> dict[str, Any]:
  """`DIR`'s eval-mode outputs (its docstring) for (B, H, H, 3) uint8 images."""
  return model.apply(variables, model_input(images_u8, input_size, model.dtype or jnp.float32), mano, train=False)


def make_forward(model: DIR, input_size: int) -> Callable[..., dict[str, Any]]:
  """`forward` jit-compiled for `model`: `(variables, images_u8, mano) -> outputs`."""
  return jax.jit(functools.partial(forward, model=model, input_size=input_size))


def predict_step(
    variables: dict,
    batch: dict,
    *,
    model: DIR,
    mano: ManoPair,
    image_size: int,
    input_size: int,
    errors_fn: Callable[..., dict],
) -> dict[str, Any]:
  """The evaluation step: eval-mode predictions of every stage, the ground truth, and every stage's
  per-sample errors, of which only the errors leave the step.

  Args:
    batch: the eval batch: the image, what `ground_truth` reads and what `errors_fn` reads of the
      ground truth besides the meshes (intrinsics, and when present hand_type, human_annot and the
      triangulated joints).
    errors_fn: `dir_jax.metrics.make_row_errors_fn`'s `(gt, stage) -> rows`; `gt` holds the batch's
      entries and the GT meshes `verts_cam_<side>` (B, 778, 3) camera frame m, `stage` the stage's
      mesh_xyz_<side> (B, 778, 3) m centred at the model's center joint and offset (B, 3) in 0.15 m.

  Returns:
    `errors`: per stage its rows (`dir_jax.metrics.row_errors`: a few hundred numbers per sample,
    what evaluation gathers instead of the meshes).
  """
  outputs = forward(variables, batch['image'], mano, model=model, input_size=input_size)
  targets = ground_truth(batch, mano, image_size)
  gt = {key: value for key, value in batch.items() if key != 'image'}
  gt.update(verts_cam_left=targets['mesh_3d_left'], verts_cam_right=targets['mesh_3d_right'])
  stages = [{k: stage[k].astype(jnp.float32) for k in _EVAL_KEYS} for stage in outputs['stages']]
  return {'errors': [errors_fn(gt, stage) for stage in stages]}


def make_predict_fn(
    model: DIR,
    mano: ManoPair,
    image_size: int,
    input_size: int,
    errors_fn: Callable[..., dict],
) -> Callable[..., dict[str, Any]]:
  """`predict_step` jit-compiled: `(variables, batch) -> predictions`. Build it once per run, so that
  repeated evaluations reuse one trace and compilation."""
  # Looked up at call time so that a test can wrap it (chex.assert_max_traces).
  return jax.jit(
      lambda variables, batch: predict_step(
          variables,
          batch,
          model=model,
          mano=mano,
          image_size=image_size,
          input_size=input_size,
          errors_fn=errors_fn,
      )
  )
