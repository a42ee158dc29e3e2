"""A synthetic MANO hand pair in the official file layout, for use without the licensed download.

The real MANO model cannot be shipped, so this module builds a hand-shaped stand-in with the same
arrays, kinematic tree and fingertip vertex ids. Right hand: metres, fingers along +x, palm facing
-y (dorsal side +y), thumb towards -z, the rest wrist (joint 0, `J_regressor[0] @ v_template`) at
`WRIST_M`, away from the origin as in the official MANO_RIGHT (its rest wrist lies at about
(0.0957, 0.0064, 0.0062) m; its fingers point along -x instead). The hand is built with its wrist at
the origin and then translated: shape and pose directions are about the wrist, so posing the
hand about its wrist gives the same shapes wherever the template lies, while a root rotation applied
about the origin instead (a missing root-pivot correction) misplaces it by |(R - I) WRIST_M|, up to
19 cm, as it would with the real model. The left hand is its mirror image
(x -> -x) with the official left file's quirk: `shapedirs[:, 0]` is stored unmirrored, so DIR's
left-hand fix (`dir_jax.mano.asset.fix_left_shapedirs`) fires and then restores the mirror.

Mesh: a palm tube (12 rings of 16 vertices, open at the wrist) and five finger tubes (rings of 8
vertices, each closed by two tip vertices) on quads of the palm's knuckle end and thumb side. With
genus 0 and one 16-vertex boundary loop (the wrist), Euler's formula F = 2V - 2 - 16 gives exactly
MANO's 778 vertices and 1538 faces; every face is oriented with its normal pointing outwards.

    python -m data_prep.synthetic_mano --out DIR [--seed 0]

writes MANO_RIGHT.pkl, MANO_LEFT.pkl, MANO_RIGHT.npz, MANO_LEFT.npz and a preview `hands.png`.
"""

import dataclasses
import os
import pickle
from typing import Any, Sequence

import numpy as np
import scipy.sparse
from absl import flags

from dir_jax import cli
from dir_jax.mano import constants

MANO_KEYS = (
    'v_template',
    'shapedirs',
    'posedirs',
    'J_regressor',
    'J',
    'weights',
    'kintree_table',
    'f',
    'hands_components',
    'hands_mean',
    'hands_coeffs',
    'bs_style',
    'bs_type',
)
NUM_HANDS_COEFFS = 1554  # rows of the official hands_coeffs (the PCA training poses)

_PALM_RING = 16  # vertices per palm ring: 8 dorsal (z increasing), then 8 palmar (z decreasing)
_DIGIT_RING = 8  # vertices per finger ring
# Palm rings from the wrist (0) to the knuckle end (1), as a fraction of each column's length.
_PALM_T = (0.0, 0.07, 0.18, 0.52, 0.63, 0.72, 0.79, 0.85, 0.9, 0.94, 0.97, 1.0)
_THUMB_PALM_RING = 2  # the thumb sits on the thumb-side quad between palm rings 2 and 3
_WRIST_HALF_WIDTH_M = 0.028
_WRIST_COLUMNS = (-1.0, -0.71, -0.43, -0.14, 0.14, 0.43, 0.71, 1.0)  # column z / half width
_KNUCKLE_SETBACK_M = 0.004  # the palm's knuckle end lies this far before each MCP joint
_THUMB_LIFT_M = 0.004  # the thumb's first joint lies this far outside its base quad
_CAP_ANGLES = np.deg2rad((35.0, 62.0))  # latitudes of the two rings that round each fingertip
_TIP_DORSAL_ANGLE = np.deg2rad(70.0)  # latitude of the second (dorsal) tip vertex
# Skinning falloff with the distance to a bone: each crease blends over ~1 cm, and the middle of a
# proximal phalanx follows its own joint to ~98% (~75% for the short middle phalanges).
_SKIN_SIGMA_M = 0.007
_POSEDIRS_M = 0.003  # largest pose-corrective displacement per unit of (R - I)
_MIRROR = np.array([-1.0, 1.0, 1.0])
_LONG_FINGERS = ('index', 'middle', 'ring', 'pinky')  # knuckle quads 0, 2, 4, 6 (-z to +z)
_DIGIT_ORDER = ('thumb',) + _LONG_FINGERS
_TIP_IDS = {'thumb': 745, 'index': 317, 'middle': 444, 'ring': 556, 'pinky': 673}
_MIDDLE_DORSAL_TIP_ID = 445  # the left network layer's middle fingertip (docs/quirks.md#q20)
# The right hand's rest wrist (metres): the official MANO_RIGHT's J_regressor[0] @ v_template (the
# value is quoted by several public MANO tools). The left hand's is mirrored in x.
WRIST_M = np.array([0.09566994, 0.00638343, 0.0061863])


@dataclasses.dataclass(frozen=True)
class _Digit:
  """One digit of the right hand in the rest pose.

  Attributes:
    joints: its three MANO joint ids, proximal to distal.
    directions: (3, 3) unit direction of each bone (joint -> next joint; the last one -> tip).
    lengths_m: (3,) bone lengths; the last bone ends at the very fingertip.
    radii_m: (4,) tube radius at the three joints and at the tip.
    palmar: (3,) direction of the pad side (orthogonalised against each bone).
    rings_between: (3,) rings inside each bone (the last bone's rings end where the tip cap starts).
  """

  joints: tuple[int, int, int]
  directions: np.ndarray
  lengths_m: tuple[float, float, float]
  radii_m: tuple[float, float, float, float]
  palmar: np.ndarray
  rings_between: tuple[int, int, int]


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _straight(angle_deg: float) -> np.ndarray:
  """(3, 3) one direction for all three bones: +x turned by `angle_deg` towards +z."""
  a = np.deg2rad(angle_deg)
  return np.tile([np.cos(a), 0.0, np.sin(a)], (3, 1))


_PALMAR = np.array([0.0, -1.0, 0.0])
# MCP joint of each long finger (metres) and z range of its base quad on the knuckle end of the
# palm; the gaps between the quads are thin webbing.
_MCP_M = {
    'index': (0.086, 0.0, -0.025),
    'middle': (0.088, 0.0, -0.0065),
    'ring': (0.085, 0.0, 0.0115),
    'pinky': (0.077, 0.0, 0.0285),
}
_BASE_Z_M = {
    'index': (-0.0355, -0.0158),
    'middle': (-0.015, 0.002),
    'ring': (0.0034, 0.0193),
    'pinky': (0.0205, 0.0375),
}
_DIGITS = {
    'index': _Digit(
        (1, 2, 3), _straight(-4.0), (0.040, 0.024, 0.021), (0.0088, 0.0079, 0.0071, 0.0064), _PALMAR, (4, 3, 3)
    ),
    'middle': _Digit(
        (4, 5, 6), _straight(0.0), (0.044, 0.026, 0.022), (0.0089, 0.0081, 0.0072, 0.0065), _PALMAR, (4, 3, 3)
    ),
    'ring': _Digit(
        (10, 11, 12), _straight(4.0), (0.041, 0.025, 0.021), (0.0083, 0.0075, 0.0068, 0.0062), _PALMAR, (4, 3, 2)
    ),
    'pinky': _Digit(
        (7, 8, 9), _straight(9.0), (0.031, 0.018, 0.018), (0.0076, 0.0067, 0.0060, 0.0055), _PALMAR, (4, 3, 2)
    ),
    # Forward, outward (-z) and palmar (-y); the pad faces the fingers and the palm.
    'thumb': _Digit(
        (13, 14, 15),
        _unit(np.array([[0.72, -0.35, -0.60], [0.86, -0.25, -0.45], [0.93, -0.18, -0.32]])),
        (0.034, 0.030, 0.026),
        (0.0135, 0.0108, 0.0097, 0.0088),
        _unit(np.array([0.0, -0.55, 0.83])),
        (4, 3, 2),
    ),
}
# hands_mean: natural flexion in radians per joint (proximal to distal).
_MEAN_FLEXION = {
    'index': (0.15, 0.22, 0.12),
    'middle': (0.18, 0.25, 0.15),
    'ring': (0.2, 0.27, 0.16),
    'pinky': (0.24, 0.3, 0.18),
    'thumb': (0.1, 0.15, 0.18),
}
# PCA row 1: spread of the first joint, rotation about +y (positive moves a tip towards -z).
_SPREAD = {'index': 1.0, 'middle': 0.25, 'ring': -0.5, 'pinky': -1.0, 'thumb': 0.8}


class _Mesh:
  """Grows a vertex list and a consistently oriented triangle list."""

  def __init__(self):
    self.points: list[np.ndarray] = []
    self.faces: list[tuple[int, int, int]] = []

  def add(self, points: np.ndarray) -> np.ndarray:
    """Appends (n, 3) points; returns their (n,) ids."""
    start = len(self.points)
    self.points.extend(np.asarray(points, np.float64).reshape(-1, 3))
    return np.arange(start, len(self.points))

  def stitch(self, loop_a, loop_b, axis: np.ndarray, hole: frozenset = frozenset()) -> None:
    """Triangulates the band between two loops that turn counter-clockwise about `axis`.

    `loop_a` lies behind `loop_b` along `axis`, so the band's normals point outwards. `loop_b` is
    rotated to start at the vertex facing `loop_a[0]`; loops of different sizes are zipped by the
    fraction of the way around. Triangles with all three vertices in `hole` are left out.
    """
    loop_a, loop_b = list(loop_a), list(loop_b)
    pts = np.asarray(self.points)
    flat = lambda v: _unit(v - np.dot(v, axis) * axis)
    ref = flat(pts[loop_a[0]] - pts[loop_a].mean(0))
    center_b = pts[loop_b].mean(0)
    shift = int(np.argmax([np.dot(flat(pts[b] - center_b), ref) for b in loop_b]))
    loop_b = loop_b[shift:] + loop_b[:shift]
    na, nb = len(loop_a), len(loop_b)
    i = j = 0
    while i < na or j < nb:
      if j == nb or (i < na and (i + 0.5) / na < (j + 0.5) / nb):
        tri = (loop_a[i], loop_a[(i + 1) % na], loop_b[j % nb])
        i += 1
      else:
        tri = (loop_a[i % na], loop_b[(j + 1) % nb], loop_b[j])
        j += 1
      if not set(tri) <= hole:
        self.faces.append(tri)


@dataclasses.dataclass
class _BuiltDigit:
  """A digit's place in the built mesh.

  Attributes:
    digit: its rest-pose description.
    joints_m: (4, 3) its three joints and the tip end.
    rings: (m, 8) vertex ids of its rings, proximal to distal.
    joint_rings: (3,) index into `rings` of the ring centred on each joint.
    tips: ids of the pad-side vertex at the very tip and of the vertex just dorsal of it.
  """

  digit: _Digit
  joints_m: np.ndarray
  rings: np.ndarray
  joint_rings: np.ndarray
  tips: tuple[int, int]


def _palm_rings() -> np.ndarray:
  """(12, 16, 3) palm ring vertices, each ring counter-clockwise about +x (D0..D7, P7..P0).

  Columns run from an ellipse at the wrist (symmetric, centroid at the origin) to the knuckle end,
  where column pairs (0, 1), (2, 3), (4, 5), (6, 7) bound the index, middle, ring and pinky bases.
  """
  knuckle_z = np.concatenate([_BASE_Z_M[f] for f in _LONG_FINGERS])
  knuckle_x = np.repeat([_MCP_M[f][0] - _KNUCKLE_SETBACK_M for f in _LONG_FINGERS], 2)
  wrist_z = _WRIST_HALF_WIDTH_M * np.asarray(_WRIST_COLUMNS)
  rings = []
  for t in _PALM_T:
    s = np.clip(t / 0.7, 0.0, 1.0)
    s = s * s * (3.0 - 2.0 * s)
    z = (1.0 - s) * wrist_z + s * knuckle_z
    half_thickness = 0.0115 - 0.001 * t + 0.003 * np.sin(np.pi * t)
    u = z / np.abs(z).max()
    roundness = 0.85 - 0.55 * s  # rounded at the wrist, nearly flat across the knuckles
    y = half_thickness * np.maximum(np.sqrt(1.0 - roundness * u * u), 0.45)
    x = t * knuckle_x
    rings.append(np.concatenate([np.stack([x, y, z], -1), np.stack([x, -y, z], -1)[::-1]]))
  return np.asarray(rings)


def _palm_id(ring: int, side: str, column: int) -> int:
  """Vertex id of the dorsal ('D') or palmar ('P') vertex of column 0..7 of a palm ring."""
  return ring * _PALM_RING + (column if side == 'D' else _PALM_RING - 1 - column)


def _palm_quad(ring_a: int, column_a: int, ring_b: int, column_b: int) -> list[int]:
  """The loop D(a), D(b), P(b), P(a): counter-clockwise seen from outside the quad's hole."""
  return [
      _palm_id(ring_a, 'D', column_a),
      _palm_id(ring_b, 'D', column_b),
      _palm_id(ring_b, 'P', column_b),
      _palm_id(ring_a, 'P', column_a),
  ]


def _ring_frame(direction: np.ndarray, palmar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Unit (lateral, palmar) axes of a ring with lateral x palmar = direction."""
  palm = _unit(palmar - np.dot(palmar, direction) * direction)
  return np.cross(palm, direction), palm


def _digit_rings(digit: _Digit, start: np.ndarray, base_normal: np.ndarray) -> dict[str, np.ndarray]:
  """Ring and tip positions of one digit's tube.

  Args:
    digit: the digit.
    start: (3,) position of its first joint, metres.
    base_normal: (3,) outward normal of the hole the tube grows from; the first ring is tilted
      halfway between it and the first bone.

  Returns:
    'rings' (m, 8, 3): ring k's vertex i lies at angle 45 i degrees from the lateral axis towards
    the palmar one (vertex 2 palmar, 6 dorsal; counter-clockwise about the digit). 'axes' (m, 3)
    ring normals, 'joint_rings' (3,) ring index of each joint, 'joints' (4, 3) joints and tip end,
    'tips' (2, 3) pad-side vertex at the very tip, then the vertex just dorsal of it.
  """
  joints = np.cumsum(np.concatenate([start[None], np.asarray(digit.lengths_m)[:, None] * digit.directions]), axis=0)
  cap_r = digit.radii_m[3]
  cap_center = joints[3] - cap_r * digit.directions[2]
  centers, axes, radii, joint_rings = [], [], [], []
  for bone in range(3):
    d = digit.directions[bone]
    joint_rings.append(len(centers))
    centers.append(joints[bone])
    axes.append(_unit(d + (digit.directions[bone - 1] if bone else base_normal)))
    radii.append(digit.radii_m[bone])
    end = joints[bone + 1] if bone < 2 else cap_center
    n = digit.rings_between[bone]
    for k in range(1, n + 1):
      f = k / (n + 1) if bone < 2 else k / n
      centers.append(joints[bone] + f * (end - joints[bone]))
      axes.append(d)
      radii.append((1.0 - f) * digit.radii_m[bone] + f * digit.radii_m[bone + 1])
  d = digit.directions[2]
  for angle in _CAP_ANGLES:
    centers.append(cap_center + cap_r * np.sin(angle) * d)
    axes.append(d)
    radii.append(cap_r * np.cos(angle))
  centers, radii = np.asarray(centers), np.asarray(radii)
  # Knuckle bumps: a little thicker at the two interphalangeal joints.
  s = (centers - joints[0]) @ digit.directions[0]
  for j in (1, 2):
    s_joint = (joints[j] - joints[0]) @ digit.directions[0]
    radii *= 1.0 + 0.05 * np.exp(-(((s - s_joint) / 0.004) ** 2))
  angles = np.arange(_DIGIT_RING) * 2.0 * np.pi / _DIGIT_RING
  rings = []
  for c, ax, r in zip(centers, axes, radii):
    lateral, palm = _ring_frame(ax, digit.palmar)
    rings.append(c + 1.04 * r * np.cos(angles)[:, None] * lateral + 0.94 * r * np.sin(angles)[:, None] * palm)
  _, palm = _ring_frame(d, digit.palmar)
  tip_pad = joints[3] + 0.2 * cap_r * palm
  tip_dorsal = cap_center + cap_r * (np.sin(_TIP_DORSAL_ANGLE) * d - np.cos(_TIP_DORSAL_ANGLE) * palm)
  return {
      'rings': np.asarray(rings),
      'axes': np.asarray(axes),
      'joint_rings': np.asarray(joint_rings),
      'joints': joints,
      'tips': np.stack([tip_pad, tip_dorsal]),
  }


def _add_digit(mesh: _Mesh, base_loop: list[int], digit: _Digit, start: np.ndarray | None = None) -> _BuiltDigit:
  """Adds a digit's tube on the 4-vertex hole `base_loop` (counter-clockwise about the digit).

  The tube: 4 -> 8 transition (12 triangles), 8-vertex rings, and a tip of two vertices:
  t0 (pad side) fans over ring vertices 0..4, t1 over 4..7, 0, plus (t0, n4, t1), (t1, n0, t0).
  The first joint is `start`, or when None, `_THUMB_LIFT_M` outside the hole's centre.
  """
  hole = np.asarray(mesh.points)[base_loop]
  normal = _unit(np.cross(hole[2] - hole[0], hole[3] - hole[1]))
  if start is None:
    start = hole.mean(0) + _THUMB_LIFT_M * normal
  geo = _digit_rings(digit, start, normal)
  ring_ids = [mesh.add(ring) for ring in geo['rings']]
  mesh.stitch(base_loop, ring_ids[0], geo['axes'][0])
  for k in range(len(ring_ids) - 1):
    mesh.stitch(ring_ids[k], ring_ids[k + 1], geo['axes'][k + 1])
  t0, t1 = (int(i) for i in mesh.add(geo['tips']))
  n = ring_ids[-1]
  half = _DIGIT_RING // 2
  for k in range(half):
    mesh.faces.append((t0, n[k], n[k + 1]))
    mesh.faces.append((t1, n[half + k], n[(half + k + 1) % _DIGIT_RING]))
  mesh.faces.extend([(t0, n[half], t1), (t1, n[0], t0)])
  return _BuiltDigit(digit, geo['joints'], np.asarray(ring_ids), geo['joint_rings'], (t0, t1))


def _build_mesh() -> tuple[np.ndarray, np.ndarray, dict[str, _BuiltDigit]]:
  """The right hand's rest mesh, in build order.

  Returns:
    verts (778, 3) metres, faces (1538, 3) ids, and each digit's place in the mesh.
  """
  mesh = _Mesh()
  for ring in _palm_rings():
    mesh.add(ring)
  rt, last = _THUMB_PALM_RING, len(_PALM_T) - 1
  thumb_loop = _palm_quad(rt, 0, rt + 1, 0)
  x_axis = np.array([1.0, 0.0, 0.0])
  for r in range(last):
    ring_ids = np.arange(_PALM_RING) + r * _PALM_RING
    mesh.stitch(ring_ids, ring_ids + _PALM_RING, x_axis, hole=frozenset(thumb_loop) if r == rt else frozenset())
  for quad in (1, 3, 5):  # webbing between the finger bases
    a, b, c, d = _palm_quad(last, quad, last, quad + 1)
    mesh.faces.extend([(a, b, c), (a, c, d)])
  digits = {'thumb': _add_digit(mesh, thumb_loop, _DIGITS['thumb'])}
  for k, name in enumerate(_LONG_FINGERS):
    digits[name] = _add_digit(mesh, _palm_quad(last, 2 * k, last, 2 * k + 1), _DIGITS[name], np.asarray(_MCP_M[name]))
  verts, faces = np.asarray(mesh.points), np.asarray(mesh.faces, np.int64)
  if verts.shape[0] != constants.NUM_VERTS or faces.shape[0] != constants.NUM_FACES:
    raise AssertionError(f'synthetic mesh has {verts.shape[0]} vertices, {faces.shape[0]} faces')
  return verts, faces, digits


def _joint_regressor(digits: dict[str, _BuiltDigit]) -> np.ndarray:
  """(16, 778): joint 0 = mean of the wrist ring, every other joint = mean of its own ring."""
  regressor = np.zeros((constants.NUM_MANO_JOINTS, constants.NUM_VERTS))
  regressor[0, :_PALM_RING] = 1.0 / _PALM_RING
  for built in digits.values():
    for joint, ring in zip(built.digit.joints, built.joint_rings):
      regressor[joint, built.rings[ring]] = 1.0 / _DIGIT_RING
  return regressor


def _point_segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(n,) distance of (n, 3) points to the segment a-b."""
  ab = b - a
  t = np.clip((points - a) @ ab / np.dot(ab, ab), 0.0, 1.0)
  return np.linalg.norm(points - (a + t[:, None] * ab), axis=-1)


def _gaussian_weights(dist: np.ndarray) -> np.ndarray:
  """(n, k) distances to k bones -> (n, k) Gaussian weights, rows normalised (computed stably)."""
  logits = -0.5 * (dist / _SKIN_SIGMA_M) ** 2
  w = np.exp(logits - logits.max(axis=1, keepdims=True))
  return w / w.sum(axis=1, keepdims=True)


def _skinning_weights(verts: np.ndarray, joints: np.ndarray, digits: dict[str, _BuiltDigit]) -> np.ndarray:
  """(778, 16) skinning weights from the distance to the bones (rows sum to 1).

  A digit's vertex blends its own three bones (joint -> next joint or tip) and its root bone
  (wrist -> first joint, weight on joint 0). A palm vertex blends joint 0 (nearest root bone) with
  each digit's first bone, so it is rigid with the wrist except near the knuckles and the thumb.
  """
  weights = np.zeros((constants.NUM_VERTS, constants.NUM_MANO_JOINTS))
  palm = np.arange(_PALM_RING * len(_PALM_T))
  root = np.min([_point_segment_distance(verts[palm], joints[0], b.joints_m[0]) for b in digits.values()], axis=0)
  first = [_point_segment_distance(verts[palm], b.joints_m[0], b.joints_m[1]) for b in digits.values()]
  weights[np.ix_(palm, [0] + [b.digit.joints[0] for b in digits.values()])] = _gaussian_weights(
      np.stack([root] + first, 1)
  )
  for b in digits.values():
    ids = np.concatenate([b.rings.reshape(-1), b.tips])
    dist = [_point_segment_distance(verts[ids], joints[0], b.joints_m[0])]
    dist += [_point_segment_distance(verts[ids], b.joints_m[k], b.joints_m[k + 1]) for k in range(3)]
    weights[np.ix_(ids, (0,) + b.digit.joints)] = _gaussian_weights(np.stack(dist, 1))
  return weights


def _smooth_fields(rng: np.random.Generator, points: np.ndarray, count: int) -> np.ndarray:
  """(n, 3, count) smooth random vector fields (3 plane waves of 0.1-0.3 m each), max |value| 1."""
  waves = 3
  k = _unit(rng.normal(size=(count, 3, waves, 3)))
  k *= 2.0 * np.pi / rng.uniform(0.1, 0.3, size=(count, 3, waves, 1))
  phase = rng.uniform(0.0, 2.0 * np.pi, size=(count, 3, waves))
  amp = rng.normal(size=(count, 3, waves))
  field = np.einsum('cdw,ncdw->ndc', amp, np.sin(np.einsum('cdwe,ne->ncdw', k, points) + phase))
  return field / np.abs(field).max(axis=(0, 1), keepdims=True)


def _shapedirs(
    verts: np.ndarray, weights: np.ndarray, digits: dict[str, _BuiltDigit], rng: np.random.Generator
) -> np.ndarray:
  """(778, 3, 10) shape directions, metres per unit beta.

  beta0 overall size (5% per unit, about the wrist); beta1 digit length (4% of the distance beyond
  the digit's first joint, along the digit); beta2 palm width (10% in z; digits move with their
  first joint); beta3 thickness (12% in y about the bones); beta4..9 smooth seeded fields <= 2 mm.
  """
  dirs = np.zeros((verts.shape[0], 3, constants.NUM_BETAS))
  dirs[:, :, 0] = 0.05 * verts
  dirs[:, 2, 2] = 0.1 * weights[:, 0] * verts[:, 2]
  bone_y = np.zeros(verts.shape[0])  # the palm's own axis lies at y = 0
  for b in digits.values():
    w_digit = weights[:, list(b.digit.joints)].sum(1)
    start = b.joints_m[0]
    d = _unit(b.joints_m[3] - start)
    dirs[:, :, 1] += 0.04 * (w_digit * np.maximum((verts - start) @ d, 0.0))[:, None] * d
    dirs[:, 2, 2] += 0.1 * w_digit * start[2]
    for k, joint in enumerate(b.digit.joints):
      a, e = b.joints_m[k], b.joints_m[k + 1]
      t = np.clip((verts - a) @ (e - a) / np.dot(e - a, e - a), 0.0, 1.0)
      bone_y += weights[:, joint] * (a[1] + t * (e[1] - a[1]))
  dirs[:, 1, 3] = 0.12 * (verts[:, 1] - bone_y)
  dirs[:, :, 4:] = 0.002 * _smooth_fields(rng, verts, constants.NUM_BETAS - 4)
  return dirs


def _posedirs(verts: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(778, 3, 135) seeded pose correctives, each around its joint's crease (<= 3 mm per unit).

  The crease of joint j is where its weight blends with its parent's: 4 w_j w_parent (<= 1).
  """
  fields = _smooth_fields(rng, verts, 9 * (constants.NUM_MANO_JOINTS - 1))
  crease = np.stack(
      [4.0 * weights[:, j] * weights[:, constants.MANO_PARENTS[j]] for j in range(1, constants.NUM_MANO_JOINTS)], 1
  )
  return _POSEDIRS_M * fields * np.repeat(np.minimum(crease, 1.0), 9, axis=1)[:, None, :]


def _flexion_axis(digit: _Digit, bone: int) -> np.ndarray:
  """Unit axis (bone direction x palmar) about which a positive angle curls the bone palmwards."""
  d = digit.directions[bone]
  _, palm = _ring_frame(d, digit.palmar)
  return np.cross(d, palm)


def _pose_pca(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """hands_components (45, 45) with orthonormal rows and hands_mean (45,): axis-angle, joints 1..15.

  Row 0 flexes every joint about its bone's flexion axis ((0, 0, -1) for the straight middle
  finger), row 1 spreads the digits; the other rows complete an orthonormal basis at random.
  """
  flex = np.zeros((constants.NUM_MANO_JOINTS - 1, 3))
  spread = np.zeros_like(flex)
  mean = np.zeros_like(flex)
  for name, digit in _DIGITS.items():
    for bone, joint in enumerate(digit.joints):
      flex[joint - 1] = _flexion_axis(digit, bone)
      mean[joint - 1] = _MEAN_FLEXION[name][bone] * flex[joint - 1]
    spread[digit.joints[0] - 1] = [0.0, _SPREAD[name], 0.0]
  basis = np.concatenate(
      [flex.reshape(1, -1), spread.reshape(1, -1), rng.normal(size=(constants.NUM_PCA - 2, constants.NUM_PCA))]
  )
  q, r = np.linalg.qr(basis.T)
  return (q * np.sign(np.diag(r))).T, mean.reshape(-1)


def _tip_permutation(digits: dict[str, _BuiltDigit]) -> np.ndarray:
  """(778,) new id of each built vertex: fingertips land on DIR's ids, the rest keep their order."""
  fixed = {digits[name].tips[0]: _TIP_IDS[name] for name in _DIGIT_ORDER}
  fixed[digits['middle'].tips[1]] = _MIDDLE_DORSAL_TIP_ID
  new_id = np.full(constants.NUM_VERTS, -1)
  new_id[list(fixed)] = list(fixed.values())
  new_id[new_id < 0] = np.setdiff1d(np.arange(constants.NUM_VERTS), list(fixed.values()))
  return new_id


def _mirror_axis_angle(aa: np.ndarray) -> np.ndarray:
  """(..., 45) axis-angles of a right hand -> its mirror image's: (ax, -ay, -az) per joint."""
  return (aa.reshape(aa.shape[:-1] + (-1, 3)) * -_MIRROR).reshape(aa.shape)


def mirror_to_left(right: dict[str, Any]) -> dict[str, Any]:
  """The left hand as the mirror image (x -> -x) of a right-hand raw dict, with the official quirk.

  Faces get reversed winding; `shapedirs` is mirrored and then its x component is overwritten with
  the right hand's unmirrored values (as in the official MANO_LEFT.pkl); `posedirs` entry
  (v, c, 9k + 3i + j) is multiplied by m_c m_i m_j with m = (-1, 1, 1); PCA axis-angles map
  (ax, ay, az) -> (ax, -ay, -az). Weights, regressor and kinematic tree are shared.
  """
  m = _MIRROR.astype(np.float32)
  shapedirs = right['shapedirs'] * m[None, :, None]
  shapedirs[:, 0, :] = right['shapedirs'][:, 0, :]
  sign_ij = np.tile(np.outer(m, m).reshape(-1), constants.NUM_MANO_JOINTS - 1)
  left = {key: value.copy() if hasattr(value, 'copy') else value for key, value in right.items()}
  left.update(
      {
          'v_template': right['v_template'] * m,
          'J': right['J'] * m,
          'f': np.ascontiguousarray(right['f'][:, ::-1]),
          'shapedirs': shapedirs,
          'posedirs': right['posedirs'] * m[None, :, None] * sign_ij.astype(np.float32),
          'hands_components': _mirror_axis_angle(right['hands_components']).astype(np.float32),
          'hands_mean': _mirror_axis_angle(right['hands_mean']).astype(np.float32),
      }
  )
  return left


def make_synthetic_mano(seed: int = 0) -> dict[str, dict[str, Any]]:
  """Builds the synthetic MANO pair.

  The mesh is built with its wrist at the origin (every seeded field and shape direction is
  computed there, about the wrist) and `v_template` and `J` are then translated by `WRIST_M`.

  Args:
    seed: seeds shape directions 4..9, the pose correctives, PCA rows 2..44 and hands_coeffs; the
      mesh, joints, skinning weights, shape directions 0..3 and PCA rows 0, 1 are fixed.

  Returns:
    {'right': raw, 'left': raw}, each raw with exactly the official pickle's keys (`MANO_KEYS`):
    float32 `v_template (778, 3)` metres, `shapedirs (778, 3, 10)` and `posedirs (778, 3, 135)`
    metres per unit, `J_regressor` scipy csc_matrix (16, 778), `J (16, 3)` metres,
    `weights (778, 16)`, `kintree_table (2, 16)` int64 (root parent 2**32 - 1), `f (1538, 3)`
    uint32, `hands_components (45, 45)`, `hands_mean (45,)` radians, `hands_coeffs (1554, 45)`,
    `bs_style` 'lbs', `bs_type` 'lrotmin'.
  """
  shape_rng, pose_rng, pca_rng, coeff_rng = (np.random.default_rng([seed, k]) for k in range(4))
  verts, faces, digits = _build_mesh()
  regressor = _joint_regressor(digits)
  weights = _skinning_weights(verts, regressor @ verts, digits)
  shapedirs = _shapedirs(verts, weights, digits, shape_rng)
  posedirs = _posedirs(verts, weights, pose_rng)
  components, mean = _pose_pca(pca_rng)
  coeff_std = 0.1 + 1.2 * np.exp(-np.arange(constants.NUM_PCA) / 8.0)
  coeffs = coeff_rng.normal(size=(NUM_HANDS_COEFFS, constants.NUM_PCA)) * coeff_std

  new_id = _tip_permutation(digits)
  order = np.argsort(new_id)
  f32 = lambda a: np.ascontiguousarray(a, np.float32)
  v_template, regressor = f32(verts[order] + WRIST_M), f32(regressor[:, order])
  kintree = np.stack(
      [np.asarray(constants.MANO_PARENTS, np.int64), np.arange(constants.NUM_MANO_JOINTS, dtype=np.int64)]
  )
  kintree[0, 0] = constants.KINTREE_ROOT_UINT32
  right = {
      'v_template': v_template,
      'shapedirs': f32(shapedirs[order]),
      'posedirs': f32(posedirs[order]),
      'J_regressor': scipy.sparse.csc_matrix(regressor),
      'J': f32(regressor.astype(np.float64) @ v_template.astype(np.float64)),
      'weights': f32(weights[order]),
      'kintree_table': kintree,
      'f': new_id[faces].astype(np.uint32),
      'hands_components': f32(components),
      'hands_mean': f32(mean),
      'hands_coeffs': f32(coeffs),
      'bs_style': 'lbs',
      'bs_type': 'lrotmin',
  }
  return {'right': right, 'left': mirror_to_left(right)}


class _ChumpyCh:
  """Pickles like a `chumpy.ch.Ch` array: its state is `{'x': array, '_dirty_vars': set()}`."""

  def __init__(self, x: np.ndarray):
    self.x = x
    self._dirty_vars = set()


class _ManoPickler(pickle._Pickler):  # pylint: disable=protected-access
  """The pure-Python pickler, writing the class `_ChumpyCh` as the global `chumpy.ch.Ch`."""

  def save_global(self, obj, name=None):
    if obj is _ChumpyCh:
      self.write(pickle.GLOBAL + b'chumpy.ch\nCh\n')
      self.memoize(obj)
      return
    super().save_global(obj, name)


def write_mano_pickle(raw: dict[str, Any], path: str, chumpy_shapedirs: bool = False) -> None:
  """Writes a raw MANO dict as a protocol-2 pickle, like the official files.

  Args:
    raw: one hand from `make_synthetic_mano`.
    path: output file.
    chumpy_shapedirs: store `shapedirs` as a `chumpy.ch.Ch` object, as the official files do
      (chumpy is needed neither to write it nor to read it with `dir_jax.mano.safe_pickle`).
  """
  data = dict(raw)
  if chumpy_shapedirs:
    data['shapedirs'] = _ChumpyCh(np.asarray(raw['shapedirs']))
  with open(path, 'wb') as f:
    _ManoPickler(f, protocol=2).dump(data)


def write_mano_npz(raw: dict[str, Any], path: str) -> None:
  """Writes a raw MANO dict as a compressed npz that loads without pickle.

  Float arrays float32, `J_regressor` dense (16, 778), `f` int32, `kintree_table` int32 with root
  parent -1, `bs_style`/`bs_type` 0-d strings.
  """
  out = {}
  for key in MANO_KEYS:
    value = raw[key]
    if key == 'J_regressor':
      value = np.asarray(value.toarray() if scipy.sparse.issparse(value) else value, np.float32)
    elif key == 'f':
      value = np.asarray(value, np.int32)
    elif key == 'kintree_table':
      value = np.asarray(value, np.int64).copy()
      value[0, 0] = -1
      value = value.astype(np.int32)
    elif key in ('bs_style', 'bs_type'):
      value = np.array(str(value))
    else:
      value = np.asarray(value, np.float32)
    out[key] = value
  np.savez_compressed(path, **out)


def render_preview(pair: dict[str, dict[str, Any]], path: str) -> None:
  """Saves a shaded picture of both hands in the rest pose: backs, palms, and a side view.

  The left hand is turned 180 degrees about y so that both hands point up, thumbs in the middle.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # pylint: disable=import-outside-toplevel

  # Plot axes (X, Y, Z) = (z, x, y): a rotation, so the hands keep their handedness. Each hand is
  # drawn with its wrist at the origin.
  to_plot = lambda v: np.asarray(v, np.float64)[:, [2, 0, 1]]
  rest = {
      side: np.asarray(pair[side]['v_template'], np.float64) - np.asarray(pair[side]['J'][0], np.float64)
      for side in ('right', 'left')
  }
  right = (to_plot(rest['right']) + [0.085, 0.0, 0.0], pair['right']['f'], (0.93, 0.74, 0.62))
  left = (to_plot(rest['left'] * [-1.0, 1.0, -1.0]) + [-0.085, 0.0, 0.0], pair['left']['f'], (0.84, 0.66, 0.56))
  views = [
      ('backs', 90.0, -90.0, (right, left)),
      ('palms', -90.0, 90.0, (right, left)),
      ('right hand, thumb side', 20.0, -150.0, (right,)),
  ]
  fig = plt.figure(figsize=(15, 5.4))
  for k, (title, elev, azim, hands) in enumerate(views):
    ax = fig.add_subplot(1, len(views), k + 1, projection='3d')
    el, az = np.deg2rad(elev), np.deg2rad(azim)
    eye = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    light = _unit(eye + 0.4 * np.array([np.sin(az), -np.cos(az), 0.0]) + [0.0, 0.0, 0.6 * np.sign(elev)])
    for verts, faces, color in hands:
      tris = verts[np.asarray(faces, np.int64)]
      normals = _unit(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]))
      shade = 0.25 + 0.75 * np.clip(normals @ light, 0.0, 1.0)
      ax.add_collection3d(
          Poly3DCollection(
              tris, facecolors=np.asarray(color) * shade[:, None], edgecolors=(0.0, 0.0, 0.0, 0.06), linewidths=0.2
          )
      )
    center = np.concatenate([h[0] for h in hands]).mean(0)
    half = 0.1 if len(hands) == 1 else 0.14
    for axis, c in zip('xyz', center):
      getattr(ax, f'set_{axis}lim')(c - half, c + half)
    ax.set_box_aspect((1.0, 1.0, 1.0), zoom=1.4)
    ax.set_proj_type('ortho')
    ax.view_init(elev=elev, azim=azim)
    ax.set_title(f'synthetic MANO, rest pose: {title}')
    ax.set_axis_off()
  fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.94, wspace=0.0)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_all(out_dir: str, seed: int = 0) -> dict[str, str]:
  """Writes MANO_{RIGHT,LEFT}.{pkl,npz} and hands.png into `out_dir`; returns {name: path}."""
  os.makedirs(out_dir, exist_ok=True)
  pair = make_synthetic_mano(seed)
  paths = {}
  for side in constants.SIDES:
    stem = os.path.join(out_dir, f'MANO_{side.upper()}')
    write_mano_pickle(pair[side], stem + '.pkl')
    write_mano_npz(pair[side], stem + '.npz')
    paths[f'{side}_pkl'], paths[f'{side}_npz'] = stem + '.pkl', stem + '.npz'
  paths['png'] = os.path.join(out_dir, 'hands.png')
  render_preview(pair, paths['png'])
  return paths


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string('out', None, 'output folder', flag_values=FLAGS, required=True)
flags.DEFINE_integer('seed', 0, 'seed of the random fields', flag_values=FLAGS)


def main(argv: Sequence[str]) -> None:
  """Command line (argv[0]: the program): `python -m data_prep.synthetic_mano --out DIR [--seed 0]`."""
  cli.parse(FLAGS, argv, 'Write a synthetic MANO hand pair (pkl + npz) and a preview picture.')
  for path in write_all(FLAGS.out, FLAGS.seed).values():
    print(path)


if __name__ == '__main__':
  cli.run(main)
