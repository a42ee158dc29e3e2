"""Pictures of hand meshes: shaded overlays on the input image, side views, and PNG output.

A mesh here is `(verts_cam_m (V, 3) metres in the OpenCV camera frame, faces (F, 3) int,
rgb (3,) float in [0, 1])`. All meshes of one picture are rasterised together, so they occlude
each other correctly.
"""

import os
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from dir_jax.render import rasterizer

# Default hand colours, float RGB in [0, 1].
LEFT_HAND_RGB = (0.35, 0.55, 0.95)
RIGHT_HAND_RGB = (0.95, 0.55, 0.35)

Mesh = tuple[np.ndarray, np.ndarray, Sequence[float]]


def _merged_with_colors(meshes: Sequence[Mesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(V, 3) float64 vertices, (F, 3) int64 faces and (F, 3) float64 per-face rgb of all meshes."""
  verts, faces, face_mesh = rasterizer.merge_meshes([m[0] for m in meshes], [m[1] for m in meshes])
  mesh_rgb = np.array([np.asarray(m[2], np.float64) for m in meshes])
  if mesh_rgb.shape != (len(meshes), 3):
    raise ValueError(f'each mesh needs one rgb colour (3,), got {mesh_rgb.shape}')
  return verts, faces, mesh_rgb[face_mesh]


def render_shaded(
    meshes: Sequence[Mesh],
    K: np.ndarray,
    height: int,
    width: int,
    light_dir_cam: Sequence[float] = rasterizer.DEFAULT_LIGHT_DIR_CAM,
) -> tuple[np.ndarray, np.ndarray]:
  """Shaded meshes seen through a pinhole camera.

  Args:
    meshes: see the module docstring.
    K: (3, 3) intrinsics of the (height, width) image.
    height, width: image size in pixels.
    light_dir_cam: (3,) direction towards the light, camera frame.

  Returns:
    rgb (H, W, 3) float32 in [0, 1] (0 where empty) and mask (H, W) bool coverage.
  """
  verts_cam_m, faces, face_rgb = _merged_with_colors(meshes)
  fragments = rasterizer.rasterize(rasterizer.project_perspective(verts_cam_m, K), faces, height, width)
  return rasterizer.shade(fragments, verts_cam_m, faces, face_rgb, light_dir_cam)


def composite(image_rgb_u8: np.ndarray, rgb: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
  """(H, W, 3) uint8: `rgb` (float in [0, 1]) blended over `image_rgb_u8` with `alpha` where `mask`."""
  out = np.array(image_rgb_u8, np.uint8, copy=True)
  blended = alpha * rgb[mask] * 255.0 + (1.0 - alpha) * out[mask].astype(np.float32)
  out[mask] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
  return out


def render_overlay(
    image_rgb_u8: np.ndarray,
    meshes: Sequence[Mesh],
    K: np.ndarray,
    alpha: float = 0.8,
    light_dir_cam: Sequence[float] = rasterizer.DEFAULT_LIGHT_DIR_CAM,
) -> np.ndarray:
  """Shaded meshes composited over an image.

  Args:
    image_rgb_u8: (H, W, 3) uint8 RGB image the camera K belongs to.
    meshes: see the module docstring.
    K: (3, 3) intrinsics.
    alpha: opacity of the meshes in [0, 1].
    light_dir_cam: (3,) direction towards the light, camera frame.

  Returns:
    (H, W, 3) uint8; pixels no mesh covers are the input's.
  """
  image_rgb_u8 = np.asarray(image_rgb_u8)
  if image_rgb_u8.ndim != 3 or image_rgb_u8.shape[2] != 3 or image_rgb_u8.dtype != np.uint8:
    raise ValueError(f'image must be (H, W, 3) uint8, got {image_rgb_u8.shape} {image_rgb_u8.dtype}')
  height, width = image_rgb_u8.shape[:2]
  rgb, mask = render_shaded(meshes, K, height, width, light_dir_cam)
  return composite(image_rgb_u8, rgb, mask, alpha)


def yaw_rotation(yaw_deg: float) -> np.ndarray:
  """(3, 3) rotation about the camera's vertical (y, down) axis by `yaw_deg` degrees.

  Applied as `R @ p`, a positive angle moves points on the camera's right (+x) towards it (-z): the
  picture then shows the scene as seen from its right-hand side.
  """
  return Rotation.from_euler('y', yaw_deg, degrees=True).as_matrix()


def render_side_view(
    meshes: Sequence[Mesh],
    size: int = 256,
    yaw_deg: float = 90.0,
    background_rgb: Sequence[int] = (255, 255, 255),
    margin_frac: float = 0.1,
    light_dir_cam: Sequence[float] = rasterizer.DEFAULT_LIGHT_DIR_CAM,
) -> np.ndarray:
  """The meshes turned together about the vertical axis through their joint centroid.

  An orthographic camera looks along +z, keeps the image upright (y down) and is fitted so the turned
  meshes fill the square picture up to `margin_frac` of its side on each side.

  Args:
    meshes: see the module docstring.
    size: side of the square picture in pixels.
    yaw_deg: turn in degrees (see `yaw_rotation`); 0 is the camera's own view, without perspective.
    background_rgb: (3,) uint8 colour of empty pixels.
    margin_frac: empty border as a fraction of `size`, in [0, 0.5).
    light_dir_cam: (3,) direction towards the light, frame of the turned meshes.

  Returns:
    (size, size, 3) uint8 RGB.
  """
  verts_cam_m, faces, face_rgb = _merged_with_colors(meshes)
  centroid_m = verts_cam_m.mean(axis=0)
  verts_view_m = (verts_cam_m - centroid_m) @ yaw_rotation(yaw_deg).T
  lo_m, hi_m = verts_view_m.min(axis=0), verts_view_m.max(axis=0)
  extent_m = max(float(np.max(hi_m[:2] - lo_m[:2])), 1e-9)
  px_per_m = size * (1.0 - 2.0 * margin_frac) / extent_m
  xy_px = (verts_view_m[:, :2] - (lo_m[:2] + hi_m[:2]) / 2) * px_per_m + size / 2
  # Orthographic depth: distance behind a plane 1 m in front of the nearest point, so all are > near.
  depth_m = verts_view_m[:, 2] - lo_m[2] + 1.0
  fragments = rasterizer.rasterize(
      np.concatenate([xy_px, depth_m[:, None]], axis=1), faces, size, size, perspective_correct=False
  )
  rgb, mask = rasterizer.shade(fragments, verts_view_m, faces, face_rgb, light_dir_cam)
  out = np.empty((size, size, 3), np.uint8)
  out[:] = np.asarray(background_rgb, np.uint8)
  return composite(out, rgb, mask, alpha=1.0)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an (H, W, 3) or (H, W) uint8 image to `path` as PNG, creating its folder."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim not in (2, 3):
    raise ValueError(f'expected an (H, W[, 3]) uint8 image, got {image.shape} {image.dtype}')
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  Image.fromarray(image).save(path, format='PNG')
