"""The demo summary's measure of how much held-out predictions follow their images."""

import numpy as np
import pytest

from dir_jax import demo


def test_root_correlation_by_hand():
  true = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) + [5.0, 7.0]
  assert demo.root_correlation(true, true) == pytest.approx(1.0)
  assert demo.root_correlation(3.0 * true - 11.0, true) == pytest.approx(1.0)  # shift and positive scale
  assert demo.root_correlation(-true, true) == pytest.approx(-1.0)
  rotated = (true - [5.0, 7.0]) @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # 90 degrees: moves, but not with it
  assert demo.root_correlation(rotated, true) == pytest.approx(0.0, abs=1e-12)
  assert np.isnan(demo.root_correlation(np.tile([[0.2, 0.3]], (4, 1)), true))  # the same place every time
  # Half the movement and the rest noise: sum(p.t) = 2, |p|^2 = 1 + 1, |t|^2 = 4 -> 2 / sqrt(8).
  noisy = 0.5 * (true - [5.0, 7.0]) + np.array([[0.0, 0.5], [0.0, -0.5], [0.5, 0.0], [-0.5, 0.0]])
  assert demo.root_correlation(noisy, true) == pytest.approx(2.0 / np.sqrt(8.0))


def test_following_lines_headline_is_the_lower_hand():
  hand = lambda r: {
      'correlation': r,
      'true_spread_px': 30.0,
      'predicted_spread_px': 3.0,
      'error_px': np.array([1.0, 3.0]),
  }
  text = demo.following_lines({'left': hand(0.25), 'right': hand(0.9), 'num_images': 2})
  assert text.splitlines()[0].startswith('held-out 2D root correlation: 0.25 (left 0.25, right 0.90;')
  assert '| per-image error: mean ± std [min, max] | 2.0 ± 1.0 [1.0, 3.0] | 2.0 ± 1.0 [1.0, 3.0] |' in text
  assert '| held-out wrist positions (2 images, crop pixels) | left | right |' in text
