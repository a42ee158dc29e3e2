"""Mesh files of hands, written with trimesh: an OBJ per hand and a PLY of several with vertex colours.

Vertices are written in the order given and never merged (`process=False`), so a MANO hand keeps its
778 vertices and 1538 faces and a file loads back (`trimesh.load(path, process=False)`) with the
same arrays. Coordinates are written in the units given (metres for the predictions).
"""

import os
from typing import Sequence

import numpy as np
import trimesh
from trimesh.exchange import obj as obj_io

# (verts (V, 3) metres, faces (F, 3) int, rgb (3,) float in [0, 1]), as in `dir_jax.render.overlay`.
Mesh = tuple[np.ndarray, np.ndarray, Sequence[float]]


def _check_mesh(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  verts = np.asarray(verts, np.float64)
  faces = np.asarray(faces)
  if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
    raise ValueError(f'expected verts (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}')
  if not np.issubdtype(faces.dtype, np.integer) or faces.min() < 0 or faces.max() >= len(verts):
    raise ValueError('faces must be integers indexing verts')
  return verts, faces.astype(np.int64)


def _makedirs_for(path: str) -> None:
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)


def write_obj(path: str, verts: np.ndarray, faces: np.ndarray, header: str = 'dir-jax hand mesh, metres') -> None:
  """Writes one mesh as Wavefront OBJ: `v` and `f` lines only (no normals, colours or texture).

  Args:
    path: output file, its folder created if needed.
    verts: (V, 3) vertex positions.
    faces: (F, 3) int vertex indices (0-based; OBJ's 1-based indices are written).
    header: comment written on the first line.
  """
  verts, faces = _check_mesh(verts, faces)
  mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
  text = obj_io.export_obj(mesh, include_normals=False, include_color=False, include_texture=False, header=header)
  _makedirs_for(path)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def colored_mesh(meshes: Sequence[Mesh]) -> trimesh.Trimesh:
  """One trimesh of all `meshes`, each vertex coloured with its mesh's rgb (uint8 RGBA, opaque).

  The vertices and faces of mesh i follow those of meshes 0..i-1 in order.
  """
  if not meshes:
    raise ValueError('need at least one mesh')
  checked = [_check_mesh(verts, faces) for verts, faces, _ in meshes]
  offsets = np.cumsum([0] + [len(verts) for verts, _ in checked[:-1]])
  verts = np.concatenate([v for v, _ in checked])
  faces = np.concatenate([f + o for (_, f), o in zip(checked, offsets)])
  colors = []
  for (v, _), (_, _, rgb) in zip(checked, meshes):
    rgb = np.asarray(rgb, np.float64)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 1:
      raise ValueError(f'each mesh needs one rgb colour (3,) in [0, 1], got {rgb}')
    rgba_u8 = np.append(np.round(rgb * 255), 255).astype(np.uint8)
    colors.append(np.broadcast_to(rgba_u8, (len(v), 4)))
  return trimesh.Trimesh(vertices=verts, faces=faces, vertex_colors=np.concatenate(colors), process=False)


def write_colored_ply(path: str, meshes: Sequence[Mesh]) -> None:
  """Writes `meshes` as one binary PLY with per-vertex colours (see `colored_mesh`)."""
  mesh = colored_mesh(meshes)
  _makedirs_for(path)
  mesh.export(path, file_type='ply')
