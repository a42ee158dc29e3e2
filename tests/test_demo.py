"""`make demo` (python -m dir_jax.demo) writes the synthetic MANO and pictures with both hands in them."""

import json

import numpy as np
from PIL import Image

from dir_jax import demo
from dir_jax.mano import load_mano_pair


def test_demo_writes_pictures_of_both_hands(tmp_path):
  assert demo.main(['--out', str(tmp_path)]) == 0
  load_mano_pair(str(tmp_path / 'mano'))
  for name in ('front', 'rest', 'side'):
    image = np.asarray(Image.open(tmp_path / f'hands_{name}.png'))
    assert image.shape == (256, 256, 3)
    blue = (image[..., 2] > image[..., 0] + 40).sum()  # left hand colour
    orange = (image[..., 0] > image[..., 2] + 40).sum()  # right hand colour
    assert blue > 500 and orange > 500, (name, blue, orange)
  joints = json.loads((tmp_path / 'joints.json').read_text())
  assert np.asarray(joints['front_left']).shape == (21, 3)
