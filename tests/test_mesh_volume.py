"""Closed meshes and the interpenetration volume: winding numbers, capping a hole, voxel counting."""

import numpy as np
import pytest
import trimesh

from dir_jax import mesh_volume


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
