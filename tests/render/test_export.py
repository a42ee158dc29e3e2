"""Mesh files (OBJ, coloured PLY) and the titled row of pictures."""

import numpy as np
import pytest
import trimesh

from dir_jax.render import export
from dir_jax.render.overlay import LEFT_HAND_RGB, RIGHT_HAND_RGB
from dir_jax.render.stages_figure import titled_row


def test_obj_loads_back_with_the_same_vertices_and_faces(two_hands, tmp_path):
  path = str(tmp_path / 'sub' / 'right.obj')
  export.write_obj(path, two_hands['verts_right_m'], two_hands['faces_right'])
  mesh = trimesh.load(path, process=False)
  assert mesh.vertices.shape == (778, 3) and mesh.faces.shape == (1538, 3)
  np.testing.assert_allclose(mesh.vertices, two_hands['verts_right_m'], atol=1e-8)
  np.testing.assert_array_equal(mesh.faces, two_hands['faces_right'])
  lines = open(path, encoding='utf-8').read().splitlines()
  assert lines[0].startswith('#') and not any(line.startswith(('vn', 'vt', 'mtllib')) for line in lines)


def test_ply_holds_both_hands_with_their_colours(two_hands, tmp_path):
  path = str(tmp_path / 'hands.ply')
  meshes = [
      (two_hands['verts_left_m'], two_hands['faces_left'], LEFT_HAND_RGB),
      (two_hands['verts_right_m'], two_hands['faces_right'], RIGHT_HAND_RGB),
  ]
  export.write_colored_ply(path, meshes)
  mesh = trimesh.load(path, process=False)
  np.testing.assert_allclose(
      mesh.vertices, np.concatenate([two_hands['verts_left_m'], two_hands['verts_right_m']]), atol=1e-7
  )
  np.testing.assert_array_equal(mesh.faces, np.concatenate([two_hands['faces_left'], two_hands['faces_right'] + 778]))
  colors = np.asarray(mesh.visual.vertex_colors)
  for rows, rgb in ((slice(0, 778), LEFT_HAND_RGB), (slice(778, None), RIGHT_HAND_RGB)):
    np.testing.assert_array_equal(
        colors[rows], np.broadcast_to(np.append(np.round(np.multiply(rgb, 255)), 255), (778, 4))
    )


@pytest.mark.parametrize(
    'verts, faces, rgb',
    [
        (np.zeros((3, 2)), np.array([[0, 1, 2]]), (1, 0, 0)),  # 2D vertices
        (np.zeros((3, 3)), np.array([[0, 1, 3]]), (1, 0, 0)),  # face index out of range
        (np.zeros((3, 3)), np.array([[0.0, 1, 2]]), (1, 0, 0)),  # float faces
        (np.zeros((3, 3)), np.array([[0, 1, 2]]), (255, 0, 0)),  # colour not in [0, 1]
    ],
)
def test_bad_meshes_are_refused(tmp_path, verts, faces, rgb):
  with pytest.raises(ValueError):
    export.write_colored_ply(str(tmp_path / 'x.ply'), [(verts, faces, rgb)])


def test_titled_row_places_panels_under_their_titles():
  rng = np.random.default_rng(0)
  panels = [rng.integers(0, 256, (64, width, 3)).astype(np.uint8) for width in (64, 48, 64)]
  row = titled_row(panels, ['initial', 'stage 1', 'stage 2'], gap_px=4)
  title_px = 14  # max(14, round(0.16 * 64))
  assert row.shape == (title_px + 64 + 4, 64 + 48 + 64 + 4 * 4, 3)
  left = 4
  for panel in panels:
    np.testing.assert_array_equal(row[title_px : title_px + 64, left : left + panel.shape[1]], panel)
    title = row[:title_px, left : left + panel.shape[1]]
    assert (title < 128).any()  # some text drawn over the white band
    left += panel.shape[1] + 4
  with pytest.raises(ValueError, match='one height'):
    titled_row([panels[0], panels[0][:32]], ['a', 'b'])
  with pytest.raises(ValueError, match='as many titles'):
    titled_row(panels, ['a'])
