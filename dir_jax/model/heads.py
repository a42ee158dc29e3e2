"""The image heads after the last refinement stage: `conv_final`, then the segmentation and dense maps.

Map: docs/architecture.md#heads. (The MANO heads, 64-vectors per hand, are the regressors of
`dir_jax/model/regressor.py`.)
"""

import jax.numpy as jnp

from dir_jax.model.layers import ConvBNReLUConv, full_precision

SEG_CLASSES = 3  # 0 background, 1 right hand, 2 left hand (docs/quirks.md#q26)
DENSE_CHANNELS = 3  # the dense map in [0, 1]


def seg_and_dense(features, img_feat_dim: int, train: bool, dtype: jnp.dtype | None = None):
  """(B,S,S,img_feat_dim) last stage's features -> seg logits (B,S,S,3), dense (B,S,S,3), both float32.

  Call it inside the caller's compact method: its modules (`conv_final`, `seg`, `dense`, the
  reference's names) belong to the caller, as in the reference's decoder.
  """
  head_in = ConvBNReLUConv(img_feat_dim, img_feat_dim, kernel=3, first_bias=False, name='conv_final', dtype=dtype)(
      features, train
  )
  seg = ConvBNReLUConv(128, SEG_CLASSES, kernel=3, name='seg', dtype=dtype)(head_in, train)
  dense = ConvBNReLUConv(128, DENSE_CHANNELS, kernel=3, name='dense', dtype=dtype)(head_in, train)
  return full_precision(seg), full_precision(dense)
