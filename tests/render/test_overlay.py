"""Overlays, side views and PNG output of shaded meshes."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from dir_jax.render import overlay
from dir_jax.render.rasterizer import render_seg_dense

RED = (1.0, 0.0, 0.0)
BLUE = (0.0, 0.0, 1.0)


def _hand_meshes(two_hands):
  return [
      (two_hands['verts_left_m'], two_hands['faces_left'], overlay.LEFT_HAND_RGB),
      (two_hands['verts_right_m'], two_hands['faces_right'], overlay.RIGHT_HAND_RGB),
  ]


@pytest.mark.parametrize('alpha', [0.8, 1.0, 0.3])
def test_overlay_changes_exactly_the_covered_pixels(two_hands, alpha):
  # Input values in [245, 255] lie above every shaded value (<= 0.95 * 255), so every covered pixel
  # changes for alpha > 0.
  image = np.random.default_rng(0).integers(245, 256, (256, 256, 3)).astype(np.uint8)
  meshes = _hand_meshes(two_hands)
  out = overlay.render_overlay(image, meshes, two_hands['K'], alpha=alpha)
  rgb, mask = overlay.render_shaded(meshes, two_hands['K'], 256, 256)
  assert out.dtype == np.uint8 and out.shape == image.shape
  assert 0.1 < mask.mean() < 0.9
  np.testing.assert_array_equal((out != image).any(axis=-1), mask)
  expected = alpha * rgb[mask] * 255 + (1 - alpha) * image[mask]
  np.testing.assert_allclose(out[mask], expected, atol=0.5 + 1e-3)


def test_hands_get_their_own_colours_where_visible(two_hands):
  meshes = _hand_meshes(two_hands)
  rgb, mask = overlay.render_shaded(meshes, two_hands['K'], 256, 256)
  labelled = [(verts, faces, label, np.zeros((len(verts), 3))) for (verts, faces, _), label in zip(meshes, (1, 2))]
  seg, _ = render_seg_dense(labelled, two_hands['K'], 256, 256)
  np.testing.assert_array_equal(mask, seg > 0)
  for label, base_rgb in [(1, overlay.LEFT_HAND_RGB), (2, overlay.RIGHT_HAND_RGB)]:
    # Shading scales the base colour: rgb / base is one intensity per pixel, in [ambient, 1].
    ratio = rgb[seg == label] / np.array(base_rgb)
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
    assert 0.4 - 1e-6 <= ratio.min() and ratio.max() <= 1.0 + 1e-6


def _two_spheres(separation_m):
  """A red sphere at x = -separation/2 and a blue one at +separation/2, 2 m in front of the camera."""
  sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
  return [
      (sphere.vertices + [-separation_m / 2, 0.0, 2.0], sphere.faces, RED),
      (sphere.vertices + [separation_m / 2, 0.0, 2.0], sphere.faces, BLUE),
  ]


def _colour_masks(image):
  """(H, W) bool masks of red-dominant and blue-dominant pixels."""
  image = image.astype(int)
  return image[..., 0] > image[..., 2] + 20, image[..., 2] > image[..., 0] + 20


@pytest.mark.parametrize('yaw_deg,front_colour', [(90.0, 'blue'), (-90.0, 'red')])
def test_side_view_turns_both_meshes_together(yaw_deg, front_colour):
  meshes = _two_spheres(0.6)
  front_view = overlay.render_side_view(meshes, size=128, yaw_deg=0.0)
  red, blue = _colour_masks(front_view)
  # Seen from the camera, red is on the left and blue on the right.
  assert red[:, :64].sum() > 100 and not red[:, 64:].any()
  assert blue[:, 64:].sum() > 100 and not blue[:, :64].any()

  side_view = overlay.render_side_view(meshes, size=128, yaw_deg=yaw_deg, background_rgb=(0, 255, 0))
  red, blue = _colour_masks(side_view)
  front, back = (blue, red) if front_colour == 'blue' else (red, blue)
  # The spheres are now one behind the other: the nearer one hides the other completely, and the
  # fitted camera makes it fill the picture up to the 10 % margin.
  assert not back.any()
  rows, cols = np.nonzero(front)
  assert abs(rows.min() - 12.8) <= 1.5 and abs(rows.max() + 1 - 115.2) <= 1.5
  assert abs(cols.min() - 12.8) <= 1.5 and abs(cols.max() + 1 - 115.2) <= 1.5
  np.testing.assert_array_equal(side_view[~front], np.broadcast_to([0, 255, 0], ((~front).sum(), 3)))


def test_side_view_of_two_hands_shows_both(two_hands):
  image = overlay.render_side_view(_hand_meshes(two_hands), size=96)
  assert image.shape == (96, 96, 3) and image.dtype == np.uint8
  covered = (image != 255).any(axis=-1)
  assert 0.05 < covered.mean() < 0.9
  colours = {tuple(c) for c in image[covered]}
  assert len(colours) > 10  # shaded, not flat


def test_save_png_round_trips(tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (17, 23, 3)).astype(np.uint8)
  path = tmp_path / 'nested' / 'picture.png'
  overlay.save_png(str(path), image)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
  with pytest.raises(ValueError):
    overlay.save_png(str(path), image.astype(np.float32))
