"""Image normalisation on the accelerator: uint8 RGB batches -> the network's input.

Conventions: docs/architecture.md#conventions.
"""

import jax.numpy as jnp

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def normalize_image(image, dtype=jnp.float32):
  """`(x / 255 - mean) / std` per RGB channel.

  Args:
    image: (..., H, W, 3) uint8 RGB (numpy or jax).
    dtype: output float dtype.

  Returns:
    (..., H, W, 3) jax array of `dtype`, ImageNet-normalised.
  """
  mean = jnp.asarray(IMAGENET_MEAN_RGB, jnp.float32)
  std = jnp.asarray(IMAGENET_STD_RGB, jnp.float32)
  return ((jnp.asarray(image, jnp.float32) / 255.0 - mean) / std).astype(dtype)
