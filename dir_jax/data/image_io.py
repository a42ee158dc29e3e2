"""Decoding image files into the (H, W, 3) uint8 RGB that the builder and `predict` work on.

PIL's `convert('RGB')` saturates 16-bit and 32-bit integer images (a 16-bit PNG becomes almost all
white); here they are scaled to 8 bits instead (value * 255 / 65535, rounded), so a 16-bit scan or a
16-bit PNG saved under a .jpg name reads as the picture it is. Float images have no agreed range and
are refused.
"""

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def to_rgb_u8(image: Image.Image) -> np.ndarray:
  """(H, W, 3) uint8 RGB of a decoded PIL image.

  Raises:
    ValueError: a float ('F') image, whose intensity range is unknown.
  """
  if image.mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.float64)
    gray = np.round(np.clip(values, 0, 65535) * (255 / 65535)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)
  if image.mode == 'F':
    raise ValueError('a floating-point image (PIL mode F) has no known intensity range; save it as 8- or 16-bit')
  return np.asarray(image.convert('RGB'), np.uint8)
