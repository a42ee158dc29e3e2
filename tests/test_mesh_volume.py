"""Closed meshes and the interpenetration volume: winding numbers, capping a hole, voxel counting."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

from data_prep import synthetic_mano
from dir_jax import mesh_volume
from dir_jax.mano import constants, gt_mano, load_mano_pair, rotation


def cube(lo_m, size_m):
  box = trimesh.creation.box(extents=(size_m,) * 3)
  return box.vertices + np.asarray(lo_m) + size_m / 2, np.asarray(box.faces)


def test_cube_winding_numbers_through_shared_edges():
  """Grid columns at x = y run through the diagonal edge of the cube's top and bottom faces."""
  verts, faces = cube([0.0, 0.0, 0.0], 0.04)
  inside = (np.arange(8) + 0.5) * 0.005
  np.testing.assert_array_equal(mesh_volume.grid_winding_numbers(verts, faces, inside, inside, inside), 1)
  np.testing.assert_array_equal(mesh_volume.grid_winding_numbers(verts, faces[:, ::-1], inside, inside, inside), -1)
  around = np.linspace(-0.0125, 0.0525, 14)  # centres 5 mm apart, 6 of them outside on each axis
  w = mesh_volume.grid_winding_numbers(verts, faces, around, around, around)
  inside_1d = (around > 0) & (around < 0.04)
  np.testing.assert_array_equal(w, inside_1d[:, None, None] & inside_1d[None, :, None] & inside_1d[None, None, :])
  # Two overlapping cubes as one (self-intersecting) mesh: winding number 2 in the overlap.
  v2, f2 = cube([0.02, 0.0, 0.0], 0.04)
  both = np.concatenate([verts, v2]), np.concatenate([faces, f2 + 8])
  w2 = mesh_volume.grid_winding_numbers(*both, inside, inside, inside)
  assert set(np.unique(w2[4:])) == {2} and set(np.unique(w2[:4])) == {1}


def test_winding_numbers_through_axis_parallel_edges_and_vertices():
  """A twice-subdivided cube has top/bottom edges along x and y at 1 cm spacing and vertices on a
  1 cm grid; columns at x, y = 0.5 .. 3.5 cm run exactly through many of them (the tie-break case)."""
  box = trimesh.creation.box(extents=(0.04,) * 3)
  box.vertices += 0.02
  mesh = box.subdivide().subdivide()
  columns = np.linspace(0.005, 0.035, 7)
  assert np.isin(columns, mesh.vertices[:, 0]).sum() >= 2
  w = mesh_volume.grid_winding_numbers(
      np.asarray(mesh.vertices), np.asarray(mesh.faces), columns, columns, np.linspace(0.0025, 0.0375, 8)
  )
  np.testing.assert_array_equal(w, 1)


def test_interpenetration_of_cubes():
  a = cube([0.0, 0.0, 0.0], 0.04)
  assert mesh_volume.interpenetration_volume(*a, *cube([0.02, 0.0, 0.0], 0.04)) == pytest.approx(32.0, abs=1e-9)
  assert mesh_volume.interpenetration_volume(*a, *cube([0.05, 0.0, 0.0], 0.04)) == 0.0
  assert mesh_volume.interpenetration_volume(*a, *cube([0.03, 0.03, 0.03], 0.04)) == pytest.approx(1.0, abs=1e-9)
  # Off-grid overlap 1.9 x 3.9 x 3.87 cm = 28.68 cm^3: within a voxel layer at 1 mm (< 1 cm^3).
  shifted = cube([0.021, 0.001, 0.0013], 0.04)
  assert mesh_volume.interpenetration_volume(*a, *shifted, voxel_m=0.001) == pytest.approx(1.9 * 3.9 * 3.87, abs=1.0)
  assert mesh_volume.interpenetration_volume(*a, *shifted) == pytest.approx(32.0, abs=1e-9)  # 4 x 8 x 8 voxels


def test_cap_hole_of_open_cube():
  verts, faces = cube([0.0, 0.0, 0.0], 0.04)
  top = np.all(verts[faces][:, :, 2] > 0.03, axis=1)
  assert top.sum() == 2
  loops = mesh_volume.boundary_loops(faces[~top])
  assert len(loops) == 1 and sorted(loops[0].tolist()) == sorted(np.unique(faces[top]).tolist())
  closed = mesh_volume.cap_faces(faces[~top], 8, loops)
  closed_verts = mesh_volume.cap_vertices(verts, loops)
  assert closed.shape == (14, 3) and closed_verts.shape == (9, 3)
  np.testing.assert_allclose(closed_verts[8], [0.02, 0.02, 0.04])
  mesh = trimesh.Trimesh(closed_verts, closed, process=False)
  assert mesh.is_watertight and mesh.is_winding_consistent
  assert mesh.volume == pytest.approx(0.04**3, rel=1e-9)
  other = cube([0.02, 0.0, 0.0], 0.04)
  assert mesh_volume.interpenetration_volume(closed_verts, closed, *other) == pytest.approx(32.0, abs=1e-9)
  assert mesh_volume.boundary_loops(faces) == ()


# ---------------------------------------------------------------------------------------------------
# The JAX version (`make_interpenetration_volume`) against numpy's, on synthetic MANO hands.

NUM_POSES = 4
CAMERA_M = np.array([0.05, -0.02, 0.5], np.float32)  # both hands ~0.5 m from the origin, as in a camera frame
RIGHT_OVER_LEFT_M = np.array([-0.08, 0.01, 0.0], np.float32)  # right wrist on the left palm: the hands interpenetrate


@pytest.fixture(scope='module')
def hands(tmp_path_factory):
  """The synthetic MANO pair posed NUM_POSES times, wrists at CAMERA_M: {side: (faces, verts)}, the
  capped faces (F, 3) and float32 capped vertices (NUM_POSES, 778 + 1, 3) m."""
  folder = tmp_path_factory.mktemp('mano')
  raw = synthetic_mano.make_synthetic_mano(0)
  for side in constants.SIDES:
    synthetic_mano.write_mano_npz(raw[side], os.path.join(folder, f'MANO_{side.upper()}.npz'))
  mano = load_mano_pair(str(folder))
  rng = np.random.default_rng(0)
  out = {}
  for side in constants.SIDES:
    normal = lambda scale, shape: jnp.asarray(rng.normal(0, scale, (NUM_POSES,) + shape), jnp.float32)
    root = jax.vmap(rotation.axis_angle_to_matrix)(normal(0.3, (3,)))
    trans = jnp.broadcast_to(CAMERA_M, (NUM_POSES, 3))
    verts, _ = gt_mano(mano[side], root, normal(1.0, (45,)), normal(1.0, (10,)), trans, center_idx=0)
    loops = mesh_volume.boundary_loops(mano[side].faces)
    capped = jax.jit(functools.partial(mesh_volume.cap_vertices, loops=loops))(verts)
    np.testing.assert_allclose(capped, mesh_volume.cap_vertices(np.asarray(verts), loops), atol=1e-7)
    out[side] = mesh_volume.cap_faces(mano[side].faces, constants.NUM_VERTS, loops), np.asarray(capped)
  return out


def voxel_counts(volume_cm3, voxel_m=mesh_volume.VOXEL_M) -> np.ndarray:
  return np.rint(np.asarray(volume_cm3) / (voxel_m**3 * mesh_volume.CM3_PER_M3))


def numpy_counts(verts_a, faces_a, verts_b, faces_b, voxel_m=mesh_volume.VOXEL_M) -> np.ndarray:
  return voxel_counts(
      [mesh_volume.interpenetration_volume(a, faces_a, b, faces_b, voxel_m) for a, b in zip(verts_a, verts_b)], voxel_m
  )


def jax_counts(verts_a, faces_a, verts_b, faces_b, x64: bool) -> np.ndarray:
  """The jitted, vmapped JAX version's counts: float64 under x64, else float32."""
  with jax.enable_x64(x64):
    volume = jax.jit(jax.vmap(mesh_volume.make_interpenetration_volume(faces_a, faces_b)))
    dtype = np.float64 if x64 else np.float32
    return voxel_counts(volume(verts_a.astype(dtype), verts_b.astype(dtype)))


# float32 rounds voxel centres and edge tests: a centre within ~1e-7 m of a surface may flip (measured on
# 256 random synthetic hand pairs ~0.5 m from the origin: no count differed). Whole layers flip when faces
# lie exactly on centre planes, as the cubes above do; the hands have none.
FLOAT32_VOXELS = 2


def test_jax_volume_of_interpenetrating_hands(hands):
  (faces_l, left), (faces_r, right) = hands['left'], hands['right']
  right = right + RIGHT_OVER_LEFT_M
  expected = numpy_counts(left, faces_l, right, faces_r)
  assert (expected > 20).all()
  np.testing.assert_array_equal(jax_counts(left, faces_l, right, faces_r, x64=True), expected)
  np.testing.assert_allclose(jax_counts(left, faces_l, right, faces_r, x64=False), expected, atol=FLOAT32_VOXELS)


def test_jax_volume_of_disjoint_hands(hands):
  """The right wrist 1 mm into the left hand's box (the boxes overlap, the hands do not), and 0.4 m away."""
  (faces_l, left), (faces_r, right) = hands['left'], hands['right']
  touching = right.copy()
  touching[..., 0] += (left.max(1)[:, 0] - right.min(1)[:, 0] - 0.001)[:, None]
  assert (np.maximum(left.min(1), touching.min(1)) < np.minimum(left.max(1), touching.max(1))).all()
  assert (numpy_counts(left, faces_l, touching, faces_r) == 0).all()
  far = right + np.float32([0.4, 0.0, 0.0])
  for other in (touching, far):
    np.testing.assert_array_equal(jax_counts(left, faces_l, other, faces_r, x64=False), 0)


def test_jax_volume_of_a_hand_and_its_translated_copy(hands):
  faces, verts = hands['right']
  offsets = np.float32(
      [[0.0, 0.0, 0.0], [0.004, -0.003, 0.001], [0.013, 0.0, 0.021], [0.0, 0.03, 0.0], [0.07, 0.02, 0]]
  )
  hand = np.repeat(verts[:1], len(offsets), axis=0)
  moved = hand + offsets[:, None]
  expected = numpy_counts(hand, faces, moved, faces)
  assert expected[0] > expected[1] > expected[2] > 0
  np.testing.assert_array_equal(jax_counts(hand, faces, moved, faces, x64=True), expected)
  np.testing.assert_allclose(jax_counts(hand, faces, moved, faces, x64=False), expected, atol=FLOAT32_VOXELS)


def test_jax_volume_batch_equals_single_examples(hands):
  (faces_l, left), (faces_r, right) = hands['left'], hands['right']
  right = right + RIGHT_OVER_LEFT_M
  volume = mesh_volume.make_interpenetration_volume(faces_l, faces_r)
  batch = jax.jit(jax.vmap(volume))(left, right)
  single = jax.jit(volume)
  np.testing.assert_array_equal(batch, [single(a, b) for a, b in zip(left, right)])
  assert mesh_volume.interpenetration_volume_jax(left[0], faces_l, right[0], faces_r) == batch[0]


def test_jax_volume_beyond_its_window_is_nan(hands):
  """A window exactly as large as the intersection box needs gives numpy's volume, one voxel less NaN; with
  the boxes apart on one axis the volume is 0 (as in numpy), however large the overlap on the others; a NaN
  vertex gives NaN (numpy raises)."""
  faces, verts = hands['right']
  hand = np.repeat(verts[:1].astype(np.float64), 3, axis=0)
  moved = hand + np.array([[0.013, 0.0, 0.021], [0.3, 0.0, 0.0], [0.013, 0.0, 0.021]])[:, None]
  moved[2, 100, 1] = np.nan
  lo = np.minimum(hand[0].min(0), moved[0].min(0))
  both_lo, both_hi = np.maximum(hand[0].min(0), moved[0].min(0)), np.minimum(hand[0].max(0), moved[0].max(0))
  centres = lo + (np.arange(100)[:, None] + 0.5) * mesh_volume.VOXEL_M  # `interpenetration_volume`'s, per axis
  cells = int(((centres >= both_lo) & (centres <= both_hi)).sum(0).max())
  expected = [mesh_volume.interpenetration_volume(a, faces, b, faces) for a, b in zip(hand[:2], moved[:2])]
  assert expected[0] > 0 and expected[1] == 0
  with jax.enable_x64(True):
    for grid_cells, volume_cm3 in ((cells, expected + [np.nan]), (cells - 1, [np.nan, 0.0, np.nan])):
      volume = jax.jit(jax.vmap(mesh_volume.make_interpenetration_volume(faces, faces, grid_cells=grid_cells)))
      np.testing.assert_allclose(volume(hand, moved), volume_cm3, rtol=1e-12)
