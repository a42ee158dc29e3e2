"""Image decoding shared by the builder and predict: 16-bit scaled to 8 bits, float refused."""

import numpy as np
import pytest
from PIL import Image

from data_prep.interhand26m import convert, preprocess
from dir_jax.data.image_io import to_rgb_u8


def test_sixteen_bit_is_scaled_not_saturated():
  values = np.array([[0, 257, 32896, 65535]], np.uint16)
  np.testing.assert_array_equal(to_rgb_u8(Image.fromarray(values))[..., 1], [[0, 1, 128, 255]])


def test_eight_bit_rgb_and_grey_unchanged():
  rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  np.testing.assert_array_equal(to_rgb_u8(Image.fromarray(rgb)), rgb)
  np.testing.assert_array_equal(to_rgb_u8(Image.fromarray(rgb[..., 0]))[..., 2], rgb[..., 0])


def test_float_image_is_refused():
  with pytest.raises(ValueError, match='floating-point'):
    to_rgb_u8(Image.fromarray(np.zeros((4, 4), np.float32)))


def test_builder_reads_a_sixteen_bit_png_named_jpg(tmp_path):
  path = tmp_path / 'image1234.jpg'
  Image.fromarray(np.full((8, 8), 30000, np.uint16)).save(path, format='PNG')
  reason, rgb = convert.read_image(str(path))
  assert reason is None and rgb.shape == (8, 8, 3) and np.all(rgb == round(30000 / 257))
  path.write_bytes(b'not an image')
  assert convert.read_image(str(path)) == (preprocess.IMAGE_CORRUPT, None)
