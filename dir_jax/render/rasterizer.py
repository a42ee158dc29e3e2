"""A z-buffered triangle rasterizer in vectorised numpy, and what is computed from its fragments.

Conventions:
- Camera frame is OpenCV's: x right, y down, z forward, metres.
- Pixel (row r, col c) covers x in [c, c + 1), y in [r, r + 1) and is sampled at its centre
  (c + 0.5, r + 0.5), as pytorch3d's screen space does. An intrinsic matrix calibrated with OpenCV's
  integer pixel centres needs 0.5 added to cx and cy to match this convention exactly.
- A pixel is covered by a triangle when its centre lies inside it. Centres exactly on an edge follow
  the top-left rule, so two triangles sharing an edge never both cover, nor both miss, a pixel on it.
- Both windings are drawn (no back-face culling); a triangle is drawn only when all three of its
  vertices lie beyond the near plane (no clipping); the nearest fragment wins (depths compared as
  float32), ties go to the lower face index.

The rasterizer enumerates, for every triangle, the pixel centres inside its bounding box as one flat
array (`np.repeat`, no per-triangle Python loop), keeps those inside all three edges, and resolves
depth with a single `np.minimum.at` over (depth, fragment index) keys.
"""

import dataclasses
from typing import Sequence

import numpy as np

# Triangles with any vertex at depth <= this are not drawn.
DEFAULT_NEAR_M = 1e-3
# Candidate pixels enumerated per vectorised chunk: ~1 MB per temporary array. Chunks 8x larger were
# ~1.5x slower on large coverage (fresh allocations page-fault), smaller ones no faster.
_CHUNK_CANDIDATES = 1 << 17
# Lambertian light direction (camera frame, from the surface towards the light): from the upper left,
# slightly in front of the camera. Shading uses |cos|, so its sign does not matter.
DEFAULT_LIGHT_DIR_CAM = (-0.3, -0.4, -1.0)


@dataclasses.dataclass(frozen=True)
class Fragments:
  """The nearest visible surface at each pixel.

  Attributes:
    face_id: (H, W) int32, index into `faces` of the visible triangle; -1 where empty.
    depth: (H, W) float32, depth of the visible surface at the pixel centre (the units of the input
      depth, metres for `project_perspective`); inf where empty.
    bary: (H, W, 3) float32, barycentric weights of the face's three vertices at the pixel centre
      (perspective-correct when rasterised with `perspective_correct=True`); 0 where empty.
  """

  face_id: np.ndarray
  depth: np.ndarray
  bary: np.ndarray

  @property
  def mask(self) -> np.ndarray:
    """(H, W) bool, True where a triangle covers the pixel."""
    return self.face_id >= 0


def project_perspective(points_cam_m: np.ndarray, K: np.ndarray) -> np.ndarray:
  """Pinhole projection of camera-frame points.

  Args:
    points_cam_m: (N, 3) metres, OpenCV camera frame.
    K: (3, 3) intrinsics, last row (0, 0, 1), in pixels.

  Returns:
    (N, 3) float64 `[x_px, y_px, z_m]`; x_px, y_px are not finite for points with z_m == 0.
  """
  points_cam_m = np.asarray(points_cam_m, np.float64)
  K = np.asarray(K, np.float64)
  if points_cam_m.ndim != 2 or points_cam_m.shape[1] != 3 or K.shape != (3, 3):
    raise ValueError(f'expected points (N, 3) and K (3, 3), got {points_cam_m.shape} and {K.shape}')
  z_m = points_cam_m[:, 2]
  with np.errstate(divide='ignore', invalid='ignore'):
    xy_norm = points_cam_m[:, :2] / z_m[:, None]
  xy_px = xy_norm @ K[:2, :2].T + K[:2, 2]
  return np.concatenate([xy_px, z_m[:, None]], axis=1)


def _pixel_span(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """First and last pixel index whose centre (i + 0.5) lies in [lo, hi], clipped to [0, size - 1]."""
  first = np.ceil(np.clip(lo - 0.5, -1.0, size)).astype(np.int64)
  last = np.floor(np.clip(hi - 0.5, -1.0, size)).astype(np.int64)
  return np.maximum(first, 0), np.minimum(last, size - 1)


def _edge_setup(xy_px: np.ndarray, orientation: np.ndarray) -> dict[str, np.ndarray]:
  """Per-triangle edge functions, oriented so that the interior is positive.

  Edge k is the one opposite vertex k. Each edge is evaluated from its endpoints in a canonical
  (lexicographic) order, so two triangles sharing an edge compute bitwise-negated values on it, and
  its direction decides the top-left tie rule.

  Args:
    xy_px: (T, 3, 2) triangle vertices in pixels.
    orientation: (T,) +1 or -1, the sign of each triangle's doubled signed area.

  Returns:
    dict of (T, 3) arrays: `dir_x`, `dir_y` (edge direction with the interior to its positive side),
    `origin_x`, `origin_y` (the canonical first endpoint) and `tie_inside` (bool, whether pixel
    centres exactly on the edge belong to this triangle).
  """
  start = xy_px[:, [1, 2, 0]]
  end = xy_px[:, [2, 0, 1]]
  swap = (start[..., 0] > end[..., 0]) | ((start[..., 0] == end[..., 0]) & (start[..., 1] > end[..., 1]))
  origin = np.where(swap[..., None], end, start)
  other = np.where(swap[..., None], start, end)
  sign = np.where(swap, -1.0, 1.0) * orientation[:, None]
  dir_x = sign * (other[..., 0] - origin[..., 0])
  dir_y = sign * (other[..., 1] - origin[..., 1])
  # Top-left rule in y-down pixels: a left edge runs upwards, a top edge runs in +x. The condition
  # flips with the direction, so exactly one of two triangles sharing an edge owns it.
  tie_inside = (dir_y < 0) | ((dir_y == 0) & (dir_x > 0))
  return {
      'dir_x': dir_x,
      'dir_y': dir_y,
      'origin_x': origin[..., 0],
      'origin_y': origin[..., 1],
      'tie_inside': tie_inside,
  }


def _covered_fragments(
    tri_index: np.ndarray,
    col0: np.ndarray,
    row0: np.ndarray,
    box_w: np.ndarray,
    box_h: np.ndarray,
    edges: dict[str, np.ndarray],
):
  """Pixel centres inside the given triangles.

  Args:
    tri_index: (T,) index into the per-triangle arrays (`edges`, `col0`, ...) of the chunk's triangles.
    col0, row0, box_w, box_h: (T_all,) int64 pixel bounding box of every triangle.
    edges: `_edge_setup` output for every triangle.

  Returns:
    (tri, col, row, edge_values): (N,) triangle index, (N,) column, (N,) row of each covered pixel and
    (N, 3) its edge-function values (>= 0, doubled areas in px^2 of the sub-triangles).
  """
  counts = box_w[tri_index] * box_h[tri_index]
  tri = np.repeat(tri_index, counts)
  first = np.cumsum(counts) - counts
  local = np.arange(tri.size, dtype=np.int64) - np.repeat(first, counts)
  w = box_w[tri]
  row = row0[tri] + local // w
  col = col0[tri] + local % w
  x_px = col + 0.5
  y_px = row + 0.5
  inside = np.ones(tri.size, bool)
  values = []
  for k in range(3):
    value = edges['dir_x'][tri, k] * (y_px - edges['origin_y'][tri, k]) - edges['dir_y'][tri, k] * (
        x_px - edges['origin_x'][tri, k]
    )
    inside &= (value > 0) | ((value == 0) & edges['tie_inside'][tri, k])
    values.append(value)
  keep = np.flatnonzero(inside)
  edge_values = np.stack([v[keep] for v in values], axis=1)
  return tri[keep], col[keep], row[keep], edge_values


def rasterize(
    verts_px_depth: np.ndarray,
    faces: np.ndarray,
    height: int,
    width: int,
    *,
    near: float = DEFAULT_NEAR_M,
    perspective_correct: bool = True,
) -> Fragments:
  """Rasterizes a triangle mesh with a z-buffer.

  Args:
    verts_px_depth: (V, 3) `[x_px, y_px, depth]` (e.g. from `project_perspective`: depth in metres).
    faces: (F, 3) int vertex indices; either winding.
    height, width: image size in pixels.
    near: triangles with any vertex at depth <= near are skipped.
    perspective_correct: True for perspective-projected vertices: barycentrics are corrected with 1/z
      weights and depth is interpolated harmonically; False for orthographic (affine) projections:
      both are linear in screen space.

  Returns:
    `Fragments` of size (height, width).
  """
  verts_px_depth = np.asarray(verts_px_depth, np.float64)
  faces = np.asarray(faces)
  if verts_px_depth.ndim != 2 or verts_px_depth.shape[1] != 3:
    raise ValueError(f'verts_px_depth must be (V, 3), got {verts_px_depth.shape}')
  if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
    raise ValueError(f'faces must be (F, 3) integers, got {faces.shape} {faces.dtype}')
  if faces.size and (faces.min() < 0 or faces.max() >= len(verts_px_depth)):
    raise ValueError('faces index outside verts_px_depth')
  num_px = height * width
  face_id = np.full(num_px, -1, np.int32)
  depth = np.full(num_px, np.inf, np.float32)
  bary = np.zeros((num_px, 3), np.float32)

  tri = verts_px_depth[faces]  # (F, 3, 3)
  xy_px, depth_vert = tri[..., :2], tri[..., 2]
  area2 = (xy_px[:, 1, 0] - xy_px[:, 0, 0]) * (xy_px[:, 2, 1] - xy_px[:, 0, 1]) - (xy_px[:, 1, 1] - xy_px[:, 0, 1]) * (
      xy_px[:, 2, 0] - xy_px[:, 0, 0]
  )
  with np.errstate(invalid='ignore'):  # non-finite vertices: their triangles are not drawn
    col0, col1 = _pixel_span(xy_px[..., 0].min(1), xy_px[..., 0].max(1), width)
    row0, row1 = _pixel_span(xy_px[..., 1].min(1), xy_px[..., 1].max(1), height)
    drawn = (
        np.isfinite(tri).all(axis=(1, 2))
        & (depth_vert > near).all(axis=1)
        & (area2 != 0)
        & (col0 <= col1)
        & (row0 <= row1)
    )
  drawn_faces = np.flatnonzero(drawn)
  if drawn_faces.size == 0:
    return Fragments(face_id.reshape(height, width), depth.reshape(height, width), bary.reshape(height, width, 3))

  xy_px, depth_vert, area2 = xy_px[drawn_faces], depth_vert[drawn_faces], area2[drawn_faces]
  col0, row0 = col0[drawn_faces], row0[drawn_faces]
  box_w = col1[drawn_faces] - col0 + 1
  box_h = row1[drawn_faces] - row0 + 1
  edges = _edge_setup(xy_px, np.sign(area2))

  # Split the triangles into runs whose bounding boxes hold about _CHUNK_CANDIDATES pixels.
  cum_counts = np.cumsum(box_w * box_h)
  bounds = [0]
  while bounds[-1] < drawn_faces.size:
    done = cum_counts[bounds[-1] - 1] if bounds[-1] else 0
    end = int(np.searchsorted(cum_counts, done + _CHUNK_CANDIDATES, side='right'))
    bounds.append(max(end, bounds[-1] + 1))
  chunks = [
      _covered_fragments(np.arange(lo, hi), col0, row0, box_w, box_h, edges) for lo, hi in zip(bounds[:-1], bounds[1:])
  ]
  frag_tri, frag_col, frag_row, edge_values = (np.concatenate(parts) for parts in zip(*chunks))

  bary_screen = edge_values / np.abs(area2[frag_tri])[:, None]
  if perspective_correct:
    bary_over_z = bary_screen / depth_vert[frag_tri]
    inv_depth = bary_over_z.sum(axis=1)
    frag_depth = 1.0 / inv_depth
    frag_bary = bary_over_z / inv_depth[:, None]
  else:
    frag_depth = (bary_screen * depth_vert[frag_tri]).sum(axis=1)
    frag_bary = bary_screen

  # Depth test: the smallest (float32 depth, fragment index) key per pixel. Positive float32 values
  # order like their bit patterns, which fit in the upper half of an int64 key.
  frag_depth32 = frag_depth.astype(np.float32)
  pixel = frag_row * width + frag_col
  key = (frag_depth32.view(np.int32).astype(np.int64) << 32) | np.arange(pixel.size, dtype=np.int64)
  best = np.full(num_px, np.iinfo(np.int64).max, np.int64)
  np.minimum.at(best, pixel, key)
  covered = np.flatnonzero(best != np.iinfo(np.int64).max)
  winner = best[covered] & 0xFFFFFFFF
  face_id[covered] = drawn_faces[frag_tri[winner]]
  depth[covered] = frag_depth32[winner]
  bary[covered] = frag_bary[winner]
  return Fragments(face_id.reshape(height, width), depth.reshape(height, width), bary.reshape(height, width, 3))


def interpolate_vertex_attributes(fragments: Fragments, faces: np.ndarray, vertex_attrs: np.ndarray) -> np.ndarray:
  """Per-vertex attributes interpolated at each pixel of the visible surface.

  Args:
    fragments: `rasterize` output for `faces`.
    faces: (F, 3) int, the faces that were rasterised.
    vertex_attrs: (V, C) per-vertex values.

  Returns:
    (H, W, C) float32, 0 where no triangle covers the pixel.
  """
  vertex_attrs = np.asarray(vertex_attrs, np.float32)
  height, width = fragments.face_id.shape
  out = np.zeros((height, width, vertex_attrs.shape[1]), np.float32)
  mask = fragments.mask
  corner_attrs = vertex_attrs[np.asarray(faces)[fragments.face_id[mask]]]  # (N, 3, C)
  out[mask] = np.einsum('nk,nkc->nc', fragments.bary[mask], corner_attrs)
  return out


def merge_meshes(
    verts_list: Sequence[np.ndarray], faces_list: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Concatenates meshes into one, so one rasterisation resolves occlusion between them.

  Args:
    verts_list: per mesh, (V_i, 3) vertices.
    faces_list: per mesh, (F_i, 3) int faces indexing that mesh's vertices.

  Returns:
    verts (sum V_i, 3) float64, faces (sum F_i, 3) int64, and face_mesh (sum F_i,) int64, the mesh
    index of each face.
  """
  if len(verts_list) != len(faces_list) or not verts_list:
    raise ValueError('need the same positive number of vertex and face arrays')
  offsets = np.cumsum([0] + [len(v) for v in verts_list[:-1]])
  verts = np.concatenate([np.asarray(v, np.float64) for v in verts_list])
  faces = np.concatenate([np.asarray(f, np.int64) + o for f, o in zip(faces_list, offsets)])
  face_mesh = np.repeat(np.arange(len(faces_list)), [len(f) for f in faces_list])
  return verts, faces, face_mesh


def render_seg_dense(
    meshes: Sequence[tuple[np.ndarray, np.ndarray, int, np.ndarray]], K: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
  """Segmentation and dense-correspondence maps of meshes that occlude each other.

  Args:
    meshes: per mesh `(verts_cam_m (V, 3) metres, faces (F, 3) int, label int in [1, 255],
      vertex_colors (V, 3) float in [0, 1])`.
    K: (3, 3) intrinsics of the (height, width) image.
    height, width: image size in pixels.

  Returns:
    seg (H, W) uint8, the label of the visible mesh, 0 for background; dense (H, W, 3) float32, the
    vertex colours interpolated (perspective-correct) over the visible surface, 0 for background.
  """
  labels = np.array([label for _, _, label, _ in meshes], np.int64)
  if np.any((labels < 1) | (labels > 255)):
    raise ValueError(f'labels must be in [1, 255], got {labels.tolist()}')
  verts_cam_m, faces, face_mesh = merge_meshes([m[0] for m in meshes], [m[1] for m in meshes])
  vertex_colors = np.concatenate([np.asarray(m[3], np.float32) for m in meshes])
  if vertex_colors.shape != verts_cam_m.shape:
    raise ValueError(f'vertex_colors must match vertices (V, 3), got {vertex_colors.shape}')
  fragments = rasterize(project_perspective(verts_cam_m, K), faces, height, width)
  seg = np.zeros((height, width), np.uint8)
  mask = fragments.mask
  seg[mask] = labels[face_mesh[fragments.face_id[mask]]]
  return seg, interpolate_vertex_attributes(fragments, faces, vertex_colors)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """(F, 3) unit normals (right-hand rule on the face winding) of (V, 3) verts; 0 for degenerate faces."""
  tri = np.asarray(verts, np.float64)[np.asarray(faces)]
  normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
  length = np.linalg.norm(normal, axis=1, keepdims=True)
  return np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)


def shade(
    fragments: Fragments,
    verts_cam: np.ndarray,
    faces: np.ndarray,
    face_rgb: np.ndarray,
    light_dir_cam: Sequence[float] = DEFAULT_LIGHT_DIR_CAM,
    ambient: float = 0.4,
    diffuse: float = 0.6,
) -> tuple[np.ndarray, np.ndarray]:
  """Flat Lambertian + ambient shading of the visible faces.

  Args:
    fragments: `rasterize` output for `faces`.
    verts_cam: (V, 3) vertices in the camera frame the light is given in (any length unit).
    faces: (F, 3) int.
    face_rgb: (F, 3) or (3,) base colour in [0, 1] per face (or for all faces).
    light_dir_cam: (3,) direction towards the light, camera frame; need not be unit length.
    ambient, diffuse: weights; intensity = ambient + diffuse * |cos(normal, light)|, so faces are lit
      the same from either side.

  Returns:
    rgb (H, W, 3) float32 in [0, 1] (0 where empty) and mask (H, W) bool coverage.
  """
  light = np.asarray(light_dir_cam, np.float64)
  light = light / np.linalg.norm(light)
  face_rgb = np.broadcast_to(np.asarray(face_rgb, np.float64), (len(faces), 3))
  intensity = ambient + diffuse * np.abs(face_normals(verts_cam, faces) @ light)
  face_shaded = np.clip(face_rgb * intensity[:, None], 0.0, 1.0).astype(np.float32)
  mask = fragments.mask
  rgb = np.zeros(fragments.face_id.shape + (3,), np.float32)
  rgb[mask] = face_shaded[fragments.face_id[mask]]
  return rgb, mask
