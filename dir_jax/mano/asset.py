"""MANO model assets: loading official pickles or npz files, validation, and the left-hand fix.

A `ManoAsset` holds one hand's model as float32 numpy arrays. It is a pytree (its arrays are leaves,
`side` and `parents` are static), so it can be passed into jit-compiled functions.
"""

import logging
import os
import pickle
from typing import Any

import flax.struct
import numpy as np

from dir_jax.mano import constants
from dir_jax.mano import safe_pickle

MANO_DOWNLOAD_HELP = (
    'MANO is a licensed download: register at https://mano.is.tue.mpg.de, download "Models & Code" '
    '(mano_v1_2.zip), and copy mano_v1_2/models/MANO_RIGHT.pkl and MANO_LEFT.pkl into {folder}. '
    'For a quick start without MANO, `python -m data_prep.synthetic_mano --out DIR` writes a synthetic '
    'hand in the same layout.'
)

# Expected shape of every array the layers use; None = any size on that axis.
_EXPECTED_SHAPES = {
    'v_template': (constants.NUM_VERTS, 3),
    'shapedirs': (constants.NUM_VERTS, 3, constants.NUM_BETAS),
    'posedirs': (constants.NUM_VERTS, 3, 9 * (constants.NUM_MANO_JOINTS - 1)),
    'J_regressor': (constants.NUM_MANO_JOINTS, constants.NUM_VERTS),
    'weights': (constants.NUM_VERTS, constants.NUM_MANO_JOINTS),
    'f': (constants.NUM_FACES, 3),
    'hands_components': (constants.NUM_PCA, constants.NUM_PCA),
    'hands_mean': (constants.NUM_PCA,),
    'kintree_table': (2, constants.NUM_MANO_JOINTS),
    'J': (constants.NUM_MANO_JOINTS, 3),
}

log = logging.getLogger(__name__)


class ManoAssetError(ValueError):
  """A MANO file is missing, unreadable, or has arrays of the wrong shape or content."""


@flax.struct.dataclass
class ManoAsset:
  """One hand of the MANO model (metres).

  Attributes:
    v_template: (778, 3) rest-pose vertices.
    shapedirs: (778, 3, 10) shape blend shapes.
    posedirs: (778, 3, 135) pose blend shapes, indexed by the flattened (R - I) of joints 1..15.
    J_regressor: (16, 778) dense joint regressor (rows sum to 1).
    weights: (778, 16) skinning weights (rows sum to 1).
    faces: (1538, 3) int32 triangle vertex ids.
    hands_components: (45, 45) pose PCA basis, one component per row.
    hands_mean: (45,) mean hand pose, axis-angle.
    side: 'left' or 'right' (static).
  """

  v_template: np.ndarray
  shapedirs: np.ndarray
  posedirs: np.ndarray
  J_regressor: np.ndarray  # pylint: disable=invalid-name
  weights: np.ndarray
  faces: np.ndarray
  hands_components: np.ndarray
  hands_mean: np.ndarray
  side: str = flax.struct.field(pytree_node=False, default='right')


def _read_raw(path: str) -> dict[str, Any]:
  """Reads a .pkl or .npz MANO file into a dict; errors name the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'MANO model file not found: {path}. '
        + MANO_DOWNLOAD_HELP.format(folder=os.path.dirname(os.path.abspath(path)))
    )
  if path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
      raise ManoAssetError(f'{path}: not a readable npz file ({e})') from e
  try:
    return safe_pickle.load_mano_pickle(path)
  except safe_pickle.UnsafePickleError as e:
    raise safe_pickle.UnsafePickleError(f'{path}: {e}') from e
  except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as e:
    raise ManoAssetError(
        f'{path}: cannot read the MANO pickle ({type(e).__name__}: {e}); the file is truncated or '
        'corrupt. ' + MANO_DOWNLOAD_HELP.format(folder=os.path.dirname(os.path.abspath(path)))
    ) from e


def _validate(raw: dict[str, Any], path: str) -> None:
  missing = sorted(set(_EXPECTED_SHAPES) - set(raw))
  if missing:
    raise ManoAssetError(f'{path}: missing MANO arrays {missing} (found {sorted(raw)})')
  for key, shape in _EXPECTED_SHAPES.items():
    got = np.shape(raw[key])
    if got != shape:
      raise ManoAssetError(f'{path}: MANO array {key!r} has shape {got}, expected {shape}')
    if key != 'f' and key != 'kintree_table' and not np.all(np.isfinite(raw[key])):
      raise ManoAssetError(f'{path}: MANO array {key!r} contains NaN or inf')
  parents = np.asarray(raw['kintree_table'])[0].astype(np.int64)
  parents[0] = -1  # the official files store 2**32 - 1 (or -1) for the root
  if tuple(parents.tolist()) != constants.MANO_PARENTS:
    raise ManoAssetError(
        f"{path}: kinematic tree {parents.tolist()} differs from MANO's {list(constants.MANO_PARENTS)}"
    )
  faces = np.asarray(raw['f'])
  if faces.min() < 0 or faces.max() >= constants.NUM_VERTS:
    raise ManoAssetError(f'{path}: face indices outside [0, {constants.NUM_VERTS})')
  for key in ('weights', 'J_regressor'):
    sums = np.asarray(raw[key], np.float64).sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-3):
      raise ManoAssetError(f'{path}: rows of {key!r} must sum to 1 (range {sums.min():.4f}..{sums.max():.4f})')


def load_mano(path: str, side: str | None = None) -> ManoAsset:
  """Loads one MANO hand from an official pickle or an npz file.

  Args:
    path: `MANO_RIGHT.pkl`, `MANO_LEFT.pkl` or the `.npz` equivalent.
    side: 'left' or 'right'; inferred from the file name when None.

  Returns:
    The validated asset, float32, without the left-hand shapedirs fix (see `load_mano_pair`).
  """
  if side is None:
    name = os.path.basename(path).upper()
    side = 'left' if 'LEFT' in name else 'right' if 'RIGHT' in name else None
    if side is None:
      raise ValueError(f'cannot tell the hand side from {path!r}; pass side="left" or "right"')
  if side not in constants.SIDES:
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  raw = _read_raw(path)
  _validate(raw, path)
  f32 = lambda k: np.ascontiguousarray(np.asarray(raw[k], np.float32))
  return ManoAsset(
      v_template=f32('v_template'),
      shapedirs=f32('shapedirs'),
      posedirs=f32('posedirs'),
      J_regressor=f32('J_regressor'),
      weights=f32('weights'),
      faces=np.ascontiguousarray(np.asarray(raw['f']).astype(np.int32)),
      hands_components=f32('hands_components'),
      hands_mean=f32('hands_mean'),
      side=side,
  )


def fix_left_shapedirs(left: ManoAsset, right: ManoAsset) -> ManoAsset:
  """DIR's left-hand shapedirs fix (docs/quirks.md#q20).

  The official MANO_LEFT.pkl stores the x component of its shape directions unmirrored (equal to the
  right hand's). When `sum |left.shapedirs[:, 0] - right.shapedirs[:, 0]| < 1`, negate it.
  """
  if np.abs(left.shapedirs[:, 0, :] - right.shapedirs[:, 0, :]).sum() >= 1:
    return left
  log.info("Fix shapedirs bug of MANO: negating the x component of the left hand's shapedirs")
  shapedirs = left.shapedirs.copy()
  shapedirs[:, 0, :] *= -1
  return left.replace(shapedirs=shapedirs)


def find_mano_file(folder: str, side: str) -> str:
  """Returns `MANO_{SIDE}.pkl` (preferred) or `.npz` in `folder`; a clear error when neither exists."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'MANO folder not found: {folder}. ' + MANO_DOWNLOAD_HELP.format(folder=folder))
  for ext in ('.pkl', '.npz'):
    candidate = os.path.join(folder, f'MANO_{side.upper()}{ext}')
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(
      f'no MANO_{side.upper()}.pkl or .npz in {folder}. ' + MANO_DOWNLOAD_HELP.format(folder=folder)
  )


@flax.struct.dataclass
class ManoPair:
  """Both hands, with the left-hand fix applied as DIR does."""

  left: ManoAsset
  right: ManoAsset

  def __getitem__(self, side: str) -> ManoAsset:
    return {'left': self.left, 'right': self.right}[side]


def load_mano_pair(folder: str) -> ManoPair:
  """Loads `MANO_LEFT` and `MANO_RIGHT` (.pkl or .npz) from `folder` and applies the left fix."""
  right = load_mano(find_mano_file(folder, 'right'), 'right')
  left = load_mano(find_mano_file(folder, 'left'), 'left')
  return ManoPair(left=fix_left_shapedirs(left, right), right=right)
