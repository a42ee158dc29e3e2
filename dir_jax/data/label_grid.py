"""The grid the losses read the seg and dense labels on, and the resampling rules onto it (numpy only).

The seg and dense losses compare the heads' maps (the last stage's grid, 32x32 for the released
model) with the labels resampled to that grid: seg by nearest (PyTorch's 'nearest', source pixel
floor(i * in / out)), dense bilinearly with half-pixel centres and no antialiasing (docs/quirks.md#q19).
`losses` applies the rules on the accelerator; `input_pipeline` applies them on the host so that a
training batch carries its labels at that grid only (lean batches).
"""

import numpy as np

from dir_jax.model.config import ModelConfig


def label_side(config: ModelConfig) -> int:
  """Side of the seg and dense heads' maps, the grid of the label losses: the last stage's grid."""
  return config.stages[-1].size


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """(out_size,) int64 source index per output index of PyTorch's 'nearest': floor(i * in / out) in float32."""
  scale = np.float32(in_size) / np.float32(out_size)
  idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(idx, in_size - 1)
