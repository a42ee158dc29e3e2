"""The numpy rasterizer against analytic coverage, depth and interpolation, and the seg/dense targets."""

import time

import numpy as np
import pytest
import trimesh

from dir_jax.render import rasterizer
from dir_jax.render.rasterizer import project_perspective, rasterize, render_seg_dense

# Barycentrics are float32 and pixel coordinates here are < 64, so reproducing a position from them
# is exact to ~64 * 2**-23 ~ 1e-5 px; 1e-4 px leaves room for the sums.
POSITION_ATOL_PX = 1e-4


def _pixel_centres(height, width):
  """(H, W) x and (H, W) y of the pixel centres."""
  y_px, x_px = np.mgrid[0:height, 0:width] + 0.5
  return x_px, y_px


def _brute_force_inside(tri_xy_px, height, width):
  """(H, W) bool: pixel centres strictly inside the (3, 2) triangle (same-sign cross products)."""
  x_px, y_px = _pixel_centres(height, width)
  signs = []
  for k in range(3):
    a, b = tri_xy_px[k], tri_xy_px[(k + 1) % 3]
    signs.append(np.sign((b[0] - a[0]) * (y_px - a[1]) - (b[1] - a[1]) * (x_px - a[0])))
  return (signs[0] == signs[1]) & (signs[1] == signs[2]) & (signs[0] != 0)


def _random_triangle(seed, size_px):
  """(3, 2) vertices with random real coordinates, partly outside a size_px square image."""
  return np.random.default_rng(seed).uniform(-0.2 * size_px, 1.2 * size_px, (3, 2))


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('faces', [[[0, 1, 2]], [[0, 2, 1]]], ids=['ccw', 'cw'])
def test_single_triangle_covers_exactly_the_centres_inside(seed, faces):
  tri_xy_px = _random_triangle(seed, 40)
  verts = np.concatenate([tri_xy_px, np.full((3, 1), 2.0)], axis=1)
  fragments = rasterize(verts, np.array(faces), 40, 48)
  expected = _brute_force_inside(tri_xy_px, 40, 48)
  assert expected.sum() > 0
  np.testing.assert_array_equal(fragments.mask, expected)
  assert set(np.unique(fragments.face_id)) <= {-1, 0}
  np.testing.assert_array_equal(np.isinf(fragments.depth), ~expected)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('perspective_correct', [True, False])
def test_barycentrics_reproduce_the_pixel_centre(seed, perspective_correct):
  tri_xy_px = _random_triangle(seed, 40)
  # Constant depth for the perspective path (where screen-space and 3D barycentrics agree); varying
  # depth for the affine path, whose barycentrics are screen-space ones.
  depth = np.full(3, 2.0) if perspective_correct else np.array([1.0, 2.0, 3.0])
  fragments = rasterize(
      np.concatenate([tri_xy_px, depth[:, None]], axis=1),
      np.array([[0, 1, 2]]),
      40,
      40,
      perspective_correct=perspective_correct,
  )
  mask = fragments.mask
  bary = fragments.bary[mask].astype(np.float64)
  x_px, y_px = _pixel_centres(40, 40)
  np.testing.assert_allclose(
      bary @ tri_xy_px, np.stack([x_px[mask], y_px[mask]], axis=1), atol=POSITION_ATOL_PX, rtol=0
  )
  np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-6)
  assert bary.min() >= 0.0
  np.testing.assert_allclose(fragments.depth[mask], bary @ depth, rtol=1e-6)
  np.testing.assert_array_equal(fragments.bary[~mask], 0.0)


@pytest.mark.parametrize('near_first', [True, False])
def test_nearer_triangle_wins_regardless_of_order(near_first):
  # Two triangles over the same 32x32 image: a big one and a smaller one inside its area, 1 m and 3 m away.
  big = [[1.0, 1.0], [31.0, 1.0], [1.0, 31.0]]
  small = [[4.0, 4.0], [30.0, 12.0], [12.0, 30.0]]

  def render(small_depth_m, big_depth_m):
    tris = [(small, small_depth_m), (big, big_depth_m)]
    if not near_first:
      tris = tris[::-1]
    verts = np.array([[x, y, d] for tri, d in tris for x, y in tri])
    fragments = rasterize(verts, np.arange(6).reshape(2, 3), 32, 32)
    small_index = 0 if near_first else 1
    return fragments, small_index

  small_mask = _brute_force_inside(np.array(small), 32, 32)
  big_mask = _brute_force_inside(np.array(big), 32, 32)
  overlap = small_mask & big_mask
  assert overlap.sum() > 50 and (small_mask & ~big_mask).sum() > 20
  for small_depth_m, big_depth_m in [(1.0, 3.0), (3.0, 1.0)]:
    fragments, small_index = render(small_depth_m, big_depth_m)
    near_index = small_index if small_depth_m < big_depth_m else 1 - small_index
    np.testing.assert_array_equal(fragments.face_id[overlap], near_index)
    np.testing.assert_allclose(fragments.depth[overlap], min(small_depth_m, big_depth_m))
    np.testing.assert_array_equal(fragments.face_id[small_mask & ~big_mask], small_index)
    np.testing.assert_array_equal(fragments.face_id[big_mask & ~small_mask], 1 - small_index)


@pytest.mark.parametrize('chunk_candidates', [1 << 17, 700])
@pytest.mark.parametrize('perspective_correct', [True, False])
def test_many_triangles_match_a_per_triangle_z_buffer(monkeypatch, chunk_candidates, perspective_correct):
  # 150 random triangles at random depths against a z-buffer filled one triangle at a time; a small
  # chunk size makes the rasterizer split the work into many chunks.
  monkeypatch.setattr(rasterizer, '_CHUNK_CANDIDATES', chunk_candidates)
  rng = np.random.default_rng(0)
  num_faces, height, width = 150, 40, 48
  verts = np.concatenate([rng.uniform(-8, 56, (3 * num_faces, 2)), rng.uniform(1, 5, (3 * num_faces, 1))], axis=1)
  faces = rng.permutation(3 * num_faces).reshape(num_faces, 3)
  fragments = rasterize(verts, faces, height, width, perspective_correct=perspective_correct)

  x_px, y_px = _pixel_centres(height, width)
  depth_ref = np.full((height, width), np.inf)
  face_ref = np.full((height, width), -1)
  for index, face in enumerate(faces):
    (xa, ya, za), (xb, yb, zb), (xc, yc, zc) = verts[face]
    area2 = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
    bary_b = ((x_px - xa) * (yc - ya) - (y_px - ya) * (xc - xa)) / area2
    bary_c = ((xb - xa) * (y_px - ya) - (yb - ya) * (x_px - xa)) / area2
    bary_a = 1.0 - bary_b - bary_c
    if perspective_correct:
      depth = 1.0 / (bary_a / za + bary_b / zb + bary_c / zc)
    else:
      depth = bary_a * za + bary_b * zb + bary_c * zc
    nearer = _brute_force_inside(verts[face, :2], height, width) & (depth < depth_ref)
    depth_ref[nearer] = depth[nearer]
    face_ref[nearer] = index
  assert (face_ref >= 0).mean() > 0.5 and len(np.unique(face_ref)) > 50
  np.testing.assert_array_equal(fragments.face_id, face_ref)
  np.testing.assert_allclose(fragments.depth, depth_ref, rtol=1e-6)


def test_reversed_winding_renders_the_same_pixels():
  tri_xy_px = np.array([[3.2, 5.1], [27.7, 9.4], [11.3, 29.9]])
  verts = np.concatenate([tri_xy_px, [[1.0], [2.0], [1.5]]], axis=1)
  front = rasterize(verts, np.array([[0, 1, 2]]), 32, 32)
  back = rasterize(verts, np.array([[0, 2, 1]]), 32, 32)
  assert front.mask.sum() > 100
  np.testing.assert_array_equal(back.mask, front.mask)
  np.testing.assert_allclose(back.depth, front.depth, rtol=1e-6)
  np.testing.assert_allclose(back.bary, front.bary[..., [0, 2, 1]], atol=1e-6)


def test_closed_mesh_shows_only_its_camera_facing_side():
  sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
  centre_m = np.array([0.1, -0.05, 4.0])
  verts_m = sphere.vertices + centre_m
  K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]])
  fragments = rasterize(project_perspective(verts_m, K), sphere.faces, 64, 64)
  visible = np.unique(fragments.face_id[fragments.mask])
  # Outward normals of the visible faces point towards the camera (against the ray to the face).
  face_centres_m = verts_m[sphere.faces].mean(axis=1)
  facing = np.einsum('fc,fc->f', sphere.face_normals, face_centres_m) < 0
  assert facing[visible].all()
  assert len(visible) > 0.8 * facing.sum()
  # Depths lie on the near cap: not in front of the true sphere, behind it by at most the facets' sag.
  x_px, y_px = _pixel_centres(64, 64)
  rays = np.stack([(x_px - 32.0) / 40.0, (y_px - 32.0) / 40.0, np.ones_like(x_px)], axis=-1)
  # Ray-sphere intersection |t r - c| = 1: t^2 |r|^2 - 2 t r.c + |c|^2 - 1 = 0.
  a, b, c = (rays**2).sum(-1), -2 * rays @ centre_m, centre_m @ centre_m - 1.0
  disc = b**2 - 4 * a * c
  hits = disc > 0.05 * b**2  # rays clearly inside the silhouette
  t_front = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
  assert fragments.mask[hits].all() and not fragments.mask[disc < 0].any()
  depth_true_m = t_front[hits]
  assert np.all(fragments.depth[hits] >= depth_true_m - 1e-5)
  assert np.all(fragments.depth[hits] <= depth_true_m + 0.1)


def _square_split(lo, hi, diagonal):
  """Two triangles covering the square [lo, hi]^2, split along one of its diagonals."""
  verts = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])
  faces = [[0, 1, 2], [0, 2, 3]] if diagonal == 0 else [[0, 1, 3], [1, 2, 3]]
  return verts, np.array(faces)


def _fan(lo, hi):
  """Eight triangles around the square's centre, with rim vertices at corners and edge midpoints."""
  mid = (lo + hi) / 2
  rim = np.array([[lo, lo], [mid, lo], [hi, lo], [hi, mid], [hi, hi], [mid, hi], [lo, hi], [lo, mid]])
  verts = np.concatenate([[[mid, mid]], rim])
  faces = np.array([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)])
  return verts, faces


def _jittered_grid(lo, hi, seed):
  """A 4x4-cell triangulated grid over [lo, hi]^2; inner vertices moved by multiples of 0.5 px
  (so many edges run through pixel centres) and every other triangle's winding reversed."""
  steps = np.linspace(lo, hi, 5)
  x, y = np.meshgrid(steps, steps)
  verts = np.stack([x.ravel(), y.ravel()], axis=1)
  inner = (np.abs(verts - lo) > 0).all(axis=1) & (np.abs(verts - hi) > 0).all(axis=1)
  rng = np.random.default_rng(seed)
  verts[inner] += rng.integers(-2, 3, (inner.sum(), 2)) * 0.5
  faces = []
  for row in range(4):
    for col in range(4):
      v = row * 5 + col
      if (row + col) % 2:
        faces += [[v, v + 1, v + 6], [v, v + 6, v + 5]]
      else:
        faces += [[v, v + 1, v + 5], [v + 1, v + 6, v + 5]]
  faces = np.array(faces)
  faces[::2] = faces[::2, ::-1]
  return verts, faces


@pytest.mark.parametrize(
    'mesh_fn,lo,hi',
    [
        (lambda lo, hi: _square_split(lo, hi, 0), 2.0, 14.0),
        (lambda lo, hi: _square_split(lo, hi, 1), 2.0, 14.0),
        (lambda lo, hi: _square_split(lo, hi, 0), 2.5, 14.5),
        (lambda lo, hi: _square_split(lo, hi, 1), 2.5, 14.5),
        (_fan, 2.5, 14.5),
        (lambda lo, hi: _jittered_grid(lo, hi, 0), 2.5, 18.5),
        (lambda lo, hi: _jittered_grid(lo, hi, 1), 2.5, 18.5),
    ],
    ids=[
        'diag0',
        'diag1',
        'diag0-centres-on-border',
        'diag1-centres-on-border',
        'fan-vertex-on-centre',
        'grid0',
        'grid1',
    ],
)
def test_shared_edges_cover_each_pixel_exactly_once(mesh_fn, lo, hi):
  verts_xy_px, faces = mesh_fn(lo, hi)
  verts = np.concatenate([verts_xy_px, np.ones((len(verts_xy_px), 1))], axis=1)
  counts = sum(rasterize(verts, face[None], 24, 24).mask.astype(int) for face in faces)
  # Top-left rule on the square's own border: centres on its left/top side are in, right/bottom out.
  x_px, y_px = _pixel_centres(24, 24)
  expected = ((x_px >= lo) & (x_px < hi) & (y_px >= lo) & (y_px < hi)).astype(int)
  np.testing.assert_array_equal(counts, expected)
  # Rasterised together, every pixel of the square is drawn by one of the faces.
  np.testing.assert_array_equal(rasterize(verts, faces, 24, 24).mask, expected.astype(bool))


def test_shared_edge_through_a_pixel_centre_with_real_coordinates():
  # Shared edges through the centre of pixel (4, 4) up to rounding, with random real endpoints; the
  # two triangles list the edge in the same or the opposite order. Whatever rounding does to the edge
  # function there, exactly one of them must cover the pixel.
  rng = np.random.default_rng(0)
  centre_px = np.array([4.5, 4.5])
  for case in range(300):
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    normal = np.array([-direction[1], direction[0]])
    verts_xy_px = np.stack(
        [
            centre_px + rng.uniform(1, 3) * direction,
            centre_px - rng.uniform(1, 3) * direction,
            centre_px + rng.uniform(1, 3) * normal + rng.normal(size=2) * 0.3,
            centre_px - rng.uniform(1, 3) * normal + rng.normal(size=2) * 0.3,
        ]
    )
    verts = np.concatenate([verts_xy_px, np.ones((4, 1))], axis=1)
    faces = [[0, 1, 2], [1, 0, 3]] if case % 2 else [[0, 1, 2], [0, 1, 3]]
    count = sum(int(rasterize(verts, np.array([face]), 9, 9).mask[4, 4]) for face in faces)
    assert count == 1, f'case {case}: pixel covered {count} times'


def test_perspective_correct_interpolation_on_a_slanted_quad():
  # The plane z = 2 + x (45 degrees to the image plane), from z = 1.2 m to z = 2.8 m.
  corners_m = np.array([[-0.8, -0.6, 1.2], [0.8, -0.6, 2.8], [0.8, 0.6, 2.8], [-0.8, 0.6, 1.2]])
  faces = np.array([[0, 1, 2], [0, 2, 3]])
  focal_px, centre_px = 60.0, 32.0
  K = np.array([[focal_px, 0.0, centre_px], [0.0, focal_px, centre_px], [0.0, 0.0, 1.0]])
  fragments = rasterize(project_perspective(corners_m, K), faces, 64, 64)
  mask = fragments.mask
  assert mask.sum() > 500
  x_px, y_px = _pixel_centres(64, 64)
  ray_x, ray_y = (x_px[mask] - centre_px) / focal_px, (y_px[mask] - centre_px) / focal_px
  depth_true_m = 2.0 / (1.0 - ray_x)  # t = 2 + ray_x * t on the ray (ray_x t, ray_y t, t)
  np.testing.assert_allclose(fragments.depth[mask], depth_true_m, rtol=1e-5)
  points_m = rasterizer.interpolate_vertex_attributes(fragments, faces, corners_m)[mask]
  points_true_m = np.stack([ray_x * depth_true_m, ray_y * depth_true_m, depth_true_m], axis=1)
  np.testing.assert_allclose(points_m, points_true_m, atol=1e-5)
  # The slant is strong enough that screen-space (affine) interpolation would be far off.
  affine = rasterize(project_perspective(corners_m, K), faces, 64, 64, perspective_correct=False)
  affine_points_m = rasterizer.interpolate_vertex_attributes(affine, faces, corners_m)[mask]
  assert np.abs(affine_points_m - points_true_m).max() > 0.05


@pytest.mark.parametrize(
    'depths_m,drawn', [((0.5, 0.5, 0.5), True), ((0.5, 0.5, -0.5), False), ((0.5, 0.5, 0.0), False)]
)
def test_only_triangles_in_front_of_the_near_plane_are_drawn(depths_m, drawn):
  verts = np.array([[2.0, 2.0, depths_m[0]], [30.0, 2.0, depths_m[1]], [2.0, 30.0, depths_m[2]]])
  fragments = rasterize(verts, np.array([[0, 1, 2]]), 32, 32)
  assert fragments.mask.any() == drawn


def test_project_perspective_matches_the_pinhole_formula():
  K = np.array([[500.0, 0.0, 128.0], [0.0, 400.0, 100.0], [0.0, 0.0, 1.0]])
  points_m = np.array([[0.1, -0.2, 2.0], [0.0, 0.0, 0.5]])
  np.testing.assert_allclose(
      project_perspective(points_m, K), [[500 * 0.05 + 128, 400 * -0.1 + 100, 2.0], [128.0, 100.0, 0.5]]
  )


def _square_mesh(x0_m, x1_m, depth_m):
  """A fronto-parallel square x in [x0_m, x1_m], y in [-0.3, 0.3] m at depth_m."""
  verts = np.array([[x0_m, -0.3, depth_m], [x1_m, -0.3, depth_m], [x1_m, 0.3, depth_m], [x0_m, 0.3, depth_m]])
  return verts, np.array([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize('near_label', [1, 2])
@pytest.mark.parametrize('reverse_order', [False, True])
def test_seg_dense_labels_the_occluder_in_the_overlap(near_label, reverse_order):
  K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]])
  colors = {1: (1.0, 0.0, 0.25), 2: (0.0, 0.5, 1.0)}
  # Label 1 spans image columns ~[12, 40), label 2 ~[24, 52), both at the same image size.
  x_range = {1: (-0.5, 0.2), 2: (-0.2, 0.5)}
  meshes = []
  for label in (1, 2):
    depth_m = 1.0 if label == near_label else 2.0
    verts_m, faces = _square_mesh(*np.array(x_range[label]) * depth_m, depth_m)
    verts_m[:, 1] *= depth_m
    meshes.append((verts_m, faces, label, np.tile(colors[label], (4, 1))))
  if reverse_order:
    meshes = meshes[::-1]
  seg, dense = render_seg_dense(meshes, K, 64, 64)
  assert seg.dtype == np.uint8 and dense.shape == (64, 64, 3)
  rows = slice(24, 40)
  np.testing.assert_array_equal(seg[rows, 13:23], 1)
  np.testing.assert_array_equal(seg[rows, 25:39], near_label)
  np.testing.assert_array_equal(seg[rows, 41:51], 2)
  np.testing.assert_allclose(dense[rows, 25:39], np.broadcast_to(colors[near_label], (16, 14, 3)), atol=1e-6)
  np.testing.assert_array_equal(seg[:10], 0)
  np.testing.assert_array_equal(dense[:10], 0.0)


def test_seg_of_two_hands_follows_their_separate_depths(two_hands):
  h = two_hands
  K = h['K']
  seg, _ = render_seg_dense(
      [
          (h['verts_right_m'], h['faces_right'], 1, np.zeros((778, 3))),
          (h['verts_left_m'], h['faces_left'], 2, np.zeros((778, 3))),
      ],
      K,
      256,
      256,
  )
  right = rasterize(project_perspective(h['verts_right_m'], K), h['faces_right'], 256, 256)
  left = rasterize(project_perspective(h['verts_left_m'], K), h['faces_left'], 256, 256)
  both = right.mask & left.mask
  assert both.sum() > 100
  np.testing.assert_array_equal(seg[right.mask & ~left.mask], 1)
  np.testing.assert_array_equal(seg[left.mask & ~right.mask], 2)
  np.testing.assert_array_equal(seg[~right.mask & ~left.mask], 0)
  np.testing.assert_array_equal(seg[both], np.where(right.depth[both] <= left.depth[both], 1, 2))


def test_two_hands_render_in_well_under_a_tenth_of_a_second(two_hands):
  h = two_hands
  verts_m, faces, _ = rasterizer.merge_meshes(
      [h['verts_right_m'], h['verts_left_m']], [h['faces_right'], h['faces_left']]
  )
  verts_px_depth = project_perspective(verts_m, h['K'])
  times_s = []
  for _ in range(5):
    start = time.perf_counter()
    fragments = rasterize(verts_px_depth, faces, 256, 256)
    times_s.append(time.perf_counter() - start)
  assert fragments.mask.mean() > 0.1
  assert min(times_s) < 0.1, f'best of 5: {min(times_s):.3f} s'


@pytest.mark.parametrize('faces', [[[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]]], ids=['ccw', 'cw'])
def test_shade_is_lambertian_and_ignores_winding(faces):
  verts_m, _ = _square_mesh(-0.3, 0.3, 1.0)
  faces = np.array(faces)
  K = np.array([[40.0, 0.0, 16.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]])
  fragments = rasterize(project_perspective(verts_m, K), faces, 32, 32)
  base_rgb = np.array([0.5, 1.0, 0.25])
  for light_dir_cam, intensity in [
      ((0, 0, -1), 1.0),
      ((0, 0, 1), 1.0),
      ((1, 0, 0), 0.4),
      ((0, 1, -1), 0.4 + 0.6 / np.sqrt(2)),
  ]:
    rgb, mask = rasterizer.shade(fragments, verts_m, faces, base_rgb, light_dir_cam, ambient=0.4, diffuse=0.6)
    np.testing.assert_array_equal(mask, fragments.mask)
    np.testing.assert_allclose(rgb[mask], np.broadcast_to(base_rgb * intensity, (mask.sum(), 3)), atol=1e-6)
    np.testing.assert_array_equal(rgb[~mask], 0.0)
