"""Closed meshes and the volume two of them share (docs/architecture.md#metrics): the interpenetration volume.

Geometry, no model inside. MANO's mesh is open at the wrist: `boundary_loops` finds the hole,
`cap_faces` / `cap_vertices` close it with a fan to the loop's centroid, and `interpenetration_volume`
counts the voxels inside both of two closed meshes (winding numbers of a ray cast per grid column,
`grid_winding_numbers`), in numpy on the host. `dir_jax.metrics` reports it as IV (cm^3).
`make_interpenetration_volume` is the same count in jnp with static shapes, to jit and vmap on an
accelerator.
"""

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

VOXEL_M = 0.005  # interpenetration voxel edge (0.5 cm, so one voxel is 0.125 cm^3)
CM3_PER_M3 = 1e6


def boundary_loops(faces) -> tuple[np.ndarray, ...]:
  """The open boundary loops of a triangle mesh (MANO: one, the 16-vertex wrist).

  Boundary edges are the edges used by exactly one face. They are chained head to tail into loops,
  each listed in the direction its faces traverse it (`loop[i] -> loop[i + 1]` is a face edge). Where
  boundaries touch at a vertex the chaining there is arbitrary; every boundary edge is still in
  exactly one loop, so `cap_faces` closes them all.

  Args:
    faces: (F, 3) int vertex ids, consistently oriented.

  Returns:
    Tuple of (L_k,) int64 arrays, one per loop.
  """
  faces = np.asarray(faces, np.int64)
  directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=0)
  _, inverse, counts = np.unique(np.sort(directed, axis=1), axis=0, return_inverse=True, return_counts=True)
  outgoing: dict[int, list[int]] = {}
  for a, b in directed[counts[inverse.reshape(-1)] == 1].tolist():
    outgoing.setdefault(a, []).append(b)
  loops = []
  while outgoing:
    start = min(outgoing)
    loop = [start]
    while True:
      following = outgoing[loop[-1]].pop()
      if not outgoing[loop[-1]]:
        del outgoing[loop[-1]]
      if following == start:
        break
      if following not in outgoing:
        raise ValueError(f'boundary edges do not close into loops (stuck at vertex {following})')
      loop.append(following)
    loops.append(np.asarray(loop, np.int64))
  return tuple(loops)


def cap_faces(faces, num_verts: int, loops: Sequence[np.ndarray]) -> np.ndarray:
  """Faces closed by a fan from each boundary loop to a new centre vertex.

  Loop k's centre gets vertex id `num_verts + k` (see `cap_vertices`). Each fan triangle uses its
  boundary edge reversed, so the closed mesh keeps the orientation of the open one.

  Returns:
    (F + sum L_k, 3) int64 faces.
  """
  caps = [
      np.stack([np.roll(loop, -1), loop, np.full_like(loop, num_verts + k)], axis=1) for k, loop in enumerate(loops)
  ]
  return np.concatenate([np.asarray(faces, np.int64)] + caps, axis=0)


def cap_vertices(verts, loops: Sequence[np.ndarray]):
  """(..., V, 3) vertices -> (..., V + len(loops), 3) with each loop's centroid appended.

  numpy in, numpy out; a jax array (also traced, inside jit) gives a jax array.
  """
  xp = jnp if isinstance(verts, jax.Array) else np
  centres = [verts[..., loop, :].mean(axis=-2, keepdims=True) for loop in loops]
  return xp.concatenate([verts] + centres, axis=-2)


def _edge_sides(p, q, p_id, q_id, points):
  """Side of each 2D point w.r.t. the edge p -> q: (sign, cross product).

  sign is +1 (left), -1 (right) or 0 (zero-length edge); cross is (q - p) x (point - p).

  Consistent between faces sharing an edge: the test is computed along the edge's canonical
  direction (smaller vertex id first) and negated for the other direction, and a point exactly on
  the line is resolved by simulation of simplicity, as if displaced by (eps, eps^2).

  Args:
    p, q: (P, 2) edge end points. p_id, q_id: (P,) their vertex ids. points: (P, 2).
  """
  swap = p_id > q_id
  a = np.where(swap[:, None], q, p)
  b = np.where(swap[:, None], p, q)
  d = b - a
  cross = d[:, 0] * (points[:, 1] - a[:, 1]) - d[:, 1] * (points[:, 0] - a[:, 0])
  side = np.sign(cross)
  side = np.where(side == 0, np.sign(-d[:, 1]), side)
  side = np.where(side == 0, np.sign(d[:, 0]), side)
  return np.where(swap, -side, side), np.where(swap, -cross, cross)


def grid_winding_numbers(verts, faces, xs, ys, zs) -> np.ndarray:
  """Winding numbers of a closed, consistently oriented mesh at the points of a regular grid.

  Casts a ray in +z from every grid point and sums the signed crossings (+1 through a face whose
  normal points up, -1 down): the winding number, exact for closed meshes and robust to
  self-intersections (nonzero = inside) and to rays through shared edges (see `_edge_sides`).
  Each face is tested only against the grid columns within one spacing of its xy bounding box.

  Args:
    verts: (V, 3). faces: (F, 3) int. xs, ys, zs: (nx,), (ny,), (nz,) increasing, evenly spaced.

  Returns:
    (nx, ny, nz) int winding numbers (0 outside; +1 inside for outward-facing normals).
  """
  verts = np.asarray(verts, np.float64)
  faces = np.asarray(faces, np.int64)
  xs, ys, zs = (np.asarray(a, np.float64) for a in (xs, ys, zs))
  nx, ny, nz = len(xs), len(ys), len(zs)
  tri = verts[faces]  # (F, 3, 3)

  def column_range(coords, lo, hi):
    """First and last grid index within one spacing of [lo, hi] (empty when first > last)."""
    step = coords[1] - coords[0] if len(coords) > 1 else 1.0
    first = np.clip(np.floor((lo - coords[0]) / step), 0, len(coords)).astype(np.int64)
    last = np.clip(np.ceil((hi - coords[0]) / step), -1, len(coords) - 1).astype(np.int64)
    return first, last

  ix0, ix1 = column_range(xs, tri[:, :, 0].min(1), tri[:, :, 0].max(1))
  iy0, iy1 = column_range(ys, tri[:, :, 1].min(1), tri[:, :, 1].max(1))
  count_x = np.maximum(ix1 - ix0 + 1, 0)
  count_y = np.maximum(iy1 - iy0 + 1, 0)
  counts = count_x * count_y
  face = np.repeat(np.arange(len(faces)), counts)
  local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
  ix = ix0[face] + local // count_y[face]
  iy = iy0[face] + local % count_y[face]
  points = np.stack([xs[ix], ys[iy]], axis=1)

  t, ids = tri[face], faces[face]
  # The edge opposite vertex k is (k+1 -> k+2); its cross product is twice the area weighting vertex k.
  sides, weights = zip(
      *[
          _edge_sides(t[:, (k + 1) % 3, :2], t[:, (k + 2) % 3, :2], ids[:, (k + 1) % 3], ids[:, (k + 2) % 3], points)
          for k in range(3)
      ]
  )
  sides, weights = np.stack(sides, 1), np.stack(weights, 1)
  hit = (sides[:, 0] != 0) & (sides[:, 0] == sides[:, 1]) & (sides[:, 1] == sides[:, 2])
  total = weights.sum(1)
  hit &= total != 0
  z_hit = (weights[hit] * t[hit][:, :, 2]).sum(1) / total[hit]
  # A crossing at height z counts for every grid point strictly below it.
  below = np.searchsorted(zs, z_hit, side='left')  # number of zs < z_hit
  column = ix[hit] * ny + iy[hit]
  acc = np.bincount(column * (nz + 1) + below, weights=sides[hit, 0], minlength=nx * ny * (nz + 1)).reshape(
      nx * ny, nz + 1
  )
  winding = np.cumsum(acc[:, ::-1], axis=1)[:, ::-1][:, 1:]
  return np.rint(winding).astype(np.int64).reshape(nx, ny, nz)


def interpenetration_volume(verts_a, faces_a, verts_b, faces_b, voxel_m: float = VOXEL_M) -> float:
  """Volume inside both of two closed meshes, by voxel counting: cm^3.

  The joint (union) bounding box of both meshes is divided into cubes of edge `voxel_m` starting at
  its minimum corner; a voxel counts when its centre is inside both meshes (nonzero winding number,
  `grid_winding_numbers`). Only voxels in the intersection of the two boxes can count, so only those
  are tested. Volume = count * voxel_m^3 (0.125 cm^3 per voxel at 0.5 cm).

  Args:
    verts_a, verts_b: (V_a, 3), (V_b, 3) metres. faces_a, faces_b: closed meshes' faces (e.g.
      MANO after `cap_faces`).
    voxel_m: voxel edge, metres.
  """
  verts_a, verts_b = np.asarray(verts_a, np.float64), np.asarray(verts_b, np.float64)
  lo = np.minimum(verts_a.min(0), verts_b.min(0))
  hi = np.maximum(verts_a.max(0), verts_b.max(0))
  both_lo = np.maximum(verts_a.min(0), verts_b.min(0))
  both_hi = np.minimum(verts_a.max(0), verts_b.max(0))
  axes = []
  for d in range(3):
    n = max(int(math.ceil((hi[d] - lo[d]) / voxel_m)), 1)
    centres = lo[d] + (np.arange(n) + 0.5) * voxel_m
    axes.append(centres[(centres >= both_lo[d]) & (centres <= both_hi[d])])
  if min(len(a) for a in axes) == 0:
    return 0.0
  inside_a = grid_winding_numbers(verts_a, faces_a, *axes) != 0
  inside_b = grid_winding_numbers(verts_b, faces_b, *axes) != 0
  return float(np.count_nonzero(inside_a & inside_b)) * voxel_m**3 * CM3_PER_M3


GRID_CELLS = 64  # voxel centres per axis of the JAX version's fixed window (`make_interpenetration_volume`)
TILE_COLUMNS = 4  # the JAX version tests a triangle against tiles of TILE_COLUMNS x TILE_COLUMNS grid columns
TILES_PER_STEP = 1024  # (triangle, tile) pairs per loop step of the JAX version


def _canonical_edges(faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`_edge_sides`'s static part for the edge opposite each corner k (k+1 -> k+2) of each face.

  Returns:
    (F, 3) int32 start ids (the smaller vertex id), (F, 3) int32 end ids, (F, 3) int32 flip: -1
    where the face runs the edge from its larger id to its smaller one, else +1.
  """
  faces = np.asarray(faces, np.int32)
  p, q = faces[:, [1, 2, 0]], faces[:, [2, 0, 1]]
  return np.minimum(p, q), np.maximum(p, q), np.where(p > q, -1, 1).astype(np.int32)


def make_interpenetration_volume(
    faces_a, faces_b, voxel_m: float = VOXEL_M, grid_cells: int = GRID_CELLS, tiles_per_step: int = TILES_PER_STEP
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """`interpenetration_volume` in jnp for two fixed meshes: static shapes, for jit and vmap on an accelerator.

  The returned function of (verts_a, verts_b) tests the same voxel centres with the same arithmetic as
  `interpenetration_volume`: centres anchored at the union box's minimum corner, those inside the
  intersection box counted; each triangle tested against the grid columns of its xy box widened to the
  next column on each side (`grid_winding_numbers`), with `_edge_sides`'s canonical edge direction and
  tie-break and the same crossing heights; nonzero winding numbers inside.

  Static shapes: the centres form a fixed window of `grid_cells`^3 starting at the intersection box's
  first centre on each axis. A triangle's columns are covered by tiles of TILE_COLUMNS^2 columns, and a
  loop runs over all (triangle, tile) pairs of both meshes, `tiles_per_step` at a time, scatter-adding
  the signed crossings per column and height: one tile for most triangles of a hand at 5 mm, a few for
  the wrist cap's fan (the synthetic MANO pair: ~3.5k pairs, 4 steps). The loop's length follows the
  meshes (under vmap, the batch's largest): huge triangles cost more steps, never a wrong count.

  The window: two MANO hands (each < 0.25 m across on every axis, so their intersection box too) need
  at most floor(0.25 / 0.005) + 1 = 51 centres per axis at 5 mm; GRID_CELLS = 64 covers an
  intersection box up to 64 * 5 mm = 0.32 m. When the intersection box has more centres than
  `grid_cells` on an axis (a smaller `voxel_m` needs more) the result is NaN, never a partial count;
  when the boxes are apart on an axis it is 0, as in numpy. Non-finite vertices give NaN (numpy raises).

  Exactness: under jax x64 with float64 vertices the arithmetic is numpy's, operation for operation,
  and so is the voxel count (cm^3 to within a rounding: XLA folds the two constant factors of count *
  voxel^3 * 1e6). With float32 vertices (jax's default) voxel centres and edge tests round to float32,
  so a centre within rounding of a surface (~1e-7 m at coordinates < 1 m) can be classified otherwise:
  no count differed on 256 random pairs of synthetic hands ~0.5 m from the origin, but faces lying
  exactly on planes of centres (axis-aligned cubes on a 2.5 mm lattice) flip whole layers of voxels. A
  backend contracting a * b - c into a fused multiply-add (GPUs) is a rounding difference of the same
  kind; an edge shared by two faces is still tested identically from both, so the winding numbers
  stay consistent.

  Memory per example: ~5 MB of XLA temporaries (measured on CPU, vmapped over 16): the crossing counts,
  2 * G^2 * (G + 1) int32 (2.1 MB at G = 64), their sums over z, and one loop step's arrays of
  tiles_per_step * 3 * TILE_COLUMNS^2 values (0.2 MB each at 1024); 0.34 GB for a batch of 64.

  Args:
    faces_a, faces_b: (F_a, 3), (F_b, 3) int faces of closed, consistently oriented meshes (MANO
      after `cap_faces`); static numpy.
    voxel_m: voxel edge, metres.
    grid_cells: voxel centres per axis of the window.
    tiles_per_step: (triangle, tile) pairs per loop step (memory against steps).

  Returns:
    A pure function of verts_a (V_a, 3), verts_b (V_b, 3) metres (float32, or float64 under x64;
    `cap_vertices` of jax arrays closes MANO) -> () volume inside both meshes, cm^3, NaN when the
    intersection box exceeds the window or a vertex is not finite. jit it, and vmap it over a batch.
  """
  grid = grid_cells
  faces = [np.asarray(f, np.int32) for f in (faces_a, faces_b)]  # int32 gather indices, also under x64
  edges = [_canonical_edges(f) for f in faces]
  flip = np.concatenate([flip for _, _, flip in edges])  # (F, 3)
  hand = np.repeat(np.arange(2, dtype=np.int32), [len(f) for f in faces])  # (F,) 0: mesh a, 1: mesh b
  tile = np.arange(TILE_COLUMNS, dtype=np.int32)

  def volume_cm3(verts_a, verts_b):
    dtype = jnp.promote_types(jnp.result_type(verts_a, verts_b), jnp.float32)
    verts = [jnp.asarray(verts_a, dtype), jnp.asarray(verts_b, dtype)]
    lo = jnp.minimum(verts[0].min(0), verts[1].min(0))
    both_lo = jnp.maximum(verts[0].min(0), verts[1].min(0))
    both_hi = jnp.minimum(verts[0].max(0), verts[1].max(0))

    def centre(index):  # (3, ...) int grid indices -> centres, m, as `interpenetration_volume` computes them
      return lo.reshape((3,) + (1,) * (index.ndim - 1)) + (index.astype(dtype) + 0.5) * voxel_m

    # The first centre >= both_lo on each axis (the estimate is off by at most one).
    first = jnp.ceil((both_lo - lo) / voxel_m - 0.5).astype(jnp.int32)
    first = first - (centre(first - 1) >= both_lo).astype(jnp.int32) + (centre(first) < both_lo).astype(jnp.int32)
    xs, ys, zs = centres = centre(first[:, None] + np.arange(grid, dtype=np.int32))  # (3, G)
    valid = (centres >= both_lo[:, None]) & (centres <= both_hi[:, None])
    overflow = jnp.any(centre(first + grid) <= both_hi) & jnp.all(valid[:, 0])  # numpy's 0 wins when an axis is empty

    corners = jnp.concatenate([v[f] for v, f in zip(verts, faces)])  # (F, 3 corners, 3)
    start = jnp.concatenate([v[s][..., :2] for v, (s, _, _) in zip(verts, edges)])  # (F, 3 edges, 2)
    delta = jnp.concatenate([v[e][..., :2] for v, (_, e, _) in zip(verts, edges)]) - start
    # `_edge_sides`'s side of a point on an edge's line: sign(-dy), else sign(dx).
    tie = jnp.where(delta[..., 1] != 0, -jnp.sign(delta[..., 1]), jnp.sign(delta[..., 0])).astype(jnp.int32)

    def column_range(axis):
      """`grid_winding_numbers`'s columns of each face: first (F,) and count (F,), 0 for none."""
      first = jnp.clip(jnp.floor((corners[..., axis].min(1) - centres[axis, 0]) / voxel_m), 0, grid)
      last = jnp.clip(jnp.ceil((corners[..., axis].max(1) - centres[axis, 0]) / voxel_m), -1, grid - 1)
      return first.astype(jnp.int32), jnp.where(last >= first, last - first + 1, 0).astype(jnp.int32)  # NaN: 0

    (ix0, count_x), (iy0, count_y) = column_range(0), column_range(1)
    tiles_y = -(-count_y // TILE_COLUMNS)
    tiles = -(-count_x // TILE_COLUMNS) * tiles_y  # (F,)
    tiles_end = jnp.cumsum(tiles)

    def cross_tiles(step, counts):
      """Scatter-adds the signed crossings of `tiles_per_step` (triangle, tile) pairs."""
      pair = step * tiles_per_step + np.arange(tiles_per_step, dtype=np.int32)
      f = jnp.minimum(jnp.searchsorted(tiles_end, pair, side='right'), len(flip) - 1)  # (P,) the pairs' faces
      k = pair - (tiles_end[f] - tiles[f])  # the tile, row-major over the face's tiles
      ix = ix0[f, None] + k[:, None] // jnp.maximum(tiles_y[f, None], 1) * TILE_COLUMNS + tile  # (P, K)
      iy = iy0[f, None] + k[:, None] % jnp.maximum(tiles_y[f, None], 1) * TILE_COLUMNS + tile
      tested = (
          (pair < tiles_end[-1])[:, None, None]
          & (ix < ix0[f, None] + count_x[f, None])[:, :, None]
          & (iy < iy0[f, None] + count_y[f, None])[:, None, :]
      )  # (P, K_x, K_y)
      a, d = start[f], delta[f]  # (P, 3, 2)
      # `_edge_sides`: cross = dx * (y - ay) - dy * (x - ax) per pair and edge (P, 3), column x and y (K).
      dx_y = d[..., 0, None] * (ys[jnp.minimum(iy, grid - 1)][:, None] - a[..., 1, None])  # (P, 3, K_y)
      dy_x = d[..., 1, None] * (xs[jnp.minimum(ix, grid - 1)][:, None] - a[..., 0, None])  # (P, 3, K_x)
      cross = dx_y[..., None, :] - dy_x[..., :, None]  # (P, 3, K_x, K_y)
      sign = jnp.asarray(flip)[f][..., None, None]
      side = jnp.where(cross > 0, 1, jnp.where(cross < 0, -1, tie[f][..., None, None])) * sign  # (P, 3, K, K)
      s0, s1, s2 = jnp.unstack(side, axis=1)
      w0, w1, w2 = jnp.unstack(cross * sign.astype(dtype), axis=1)  # (P, K, K) each, the weights of corners 0, 1, 2
      total = (w0 + w1) + w2
      hit = tested & (s0 != 0) & (s0 == s1) & (s1 == s2) & (total != 0)
      z0, z1, z2 = (corners[f, c, 2, None, None] for c in range(3))
      z_hit = ((w0 * z0 + w1 * z1) + w2 * z2) / total  # numpy's summation order
      below = jnp.searchsorted(zs, z_hit, side='left').astype(jnp.int32)  # centres strictly below the crossing
      column = (jnp.asarray(hand)[f][:, None, None] * grid + ix[:, :, None]) * grid + iy[:, None, :]  # (P, K, K)
      cell = column * (grid + 1) + below
      return counts.at[jnp.where(hit, cell, counts.size)].add(s0, mode='drop')

    steps = -(-tiles_end[-1] // tiles_per_step)
    counts = jax.lax.fori_loop(0, steps, cross_tiles, jnp.zeros(2 * grid * grid * (grid + 1), jnp.int32))
    counts = counts.reshape(2, grid, grid, grid + 1)
    winding = jax.lax.cumsum(counts, axis=3, reverse=True)[..., 1:]  # (2, G, G, G): crossings above each centre
    inside = jnp.all(winding != 0, axis=0) & valid[0][:, None, None] & valid[1][:, None] & valid[2]
    volume = jnp.count_nonzero(inside).astype(dtype) * voxel_m**3 * CM3_PER_M3
    finite = jnp.isfinite(verts[0]).all() & jnp.isfinite(verts[1]).all()
    return jnp.where(overflow | ~finite, jnp.nan, volume)

  return volume_cm3


def interpenetration_volume_jax(
    verts_a, faces_a, verts_b, faces_b, voxel_m: float = VOXEL_M, grid_cells: int = GRID_CELLS
) -> jax.Array:
  """`interpenetration_volume`'s arguments, `make_interpenetration_volume`'s result: () cm^3 or NaN.

  For one pair; to jit or vmap, build the function once with `make_interpenetration_volume`.
  """
  return make_interpenetration_volume(faces_a, faces_b, voxel_m, grid_cells)(verts_a, verts_b)
