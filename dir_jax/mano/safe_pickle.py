"""A restricted unpickler for the official MANO model files, with no chumpy installed.

The official `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` are Python 2 pickles whose arrays are numpy arrays,
`chumpy.ch.Ch` objects (a plain object whose pickled state holds its value under `x`) and a scipy
sparse `J_regressor`. This unpickler rebuilds exactly those as numpy arrays and refuses every other
global, so a file that tries to import `os.system` (or anything else) raises `UnsafePickleError`
instead of running code. scipy itself is not needed: sparse matrices are densified from their state.
"""

import codecs
import pickle
from typing import Any

import numpy as np
from numpy._core import multiarray as _multiarray


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global that a MANO model file never contains."""


class _ChumpyState:
  """Stand-in for any chumpy class: keeps the pickled state; `x` is the array value."""

  def __init__(self, *args):
    del args
    self.state = {}

  def __setstate__(self, state):
    self.state = state[0] if isinstance(state, tuple) else state

  def to_array(self, key: str) -> np.ndarray:
    if 'x' not in self.state:
      raise ValueError(
          f'MANO entry {key!r} is a chumpy expression without a stored value (keys: '
          f'{sorted(self.state)}); only chumpy.ch.Ch arrays are supported. Convert the file with '
          'chumpy installed, e.g. np.array(value), and save it as .npz.')
    return np.asarray(self.state['x'])


class _SparseState:
  """Stand-in for scipy.sparse csc/csr/coo matrices: densified from the pickled state."""

  def __init__(self, *args):
    del args
    self.state = {}
    self.format = ''

  def __setstate__(self, state):
    self.state = state[0] if isinstance(state, tuple) else state

  def to_array(self, key: str) -> np.ndarray:
    st = self.state
    shape = tuple(int(n) for n in st.get('_shape', st.get('shape', ())))
    if len(shape) != 2:
      raise ValueError(f'MANO entry {key!r}: sparse matrix without a 2-D shape')
    dense = np.zeros(shape, dtype=np.asarray(st['data']).dtype)
    if self.format == 'coo':
      rows = np.asarray(st.get('row', st.get('coords', [None])[0]))
      cols = np.asarray(st.get('col', st.get('coords', [None, None])[1]))
      np.add.at(dense, (rows, cols), np.asarray(st['data']))
      return dense
    data, indices, indptr = (np.asarray(st[k]) for k in ('data', 'indices', 'indptr'))
    major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    if self.format == 'csc':
      np.add.at(dense, (indices, major), data)
    else:
      np.add.at(dense, (major, indices), data)
    return dense


def _sparse_class(fmt: str) -> type:
  return type(f'_{fmt}_matrix', (_SparseState,), {'format': fmt})


def _codecs_encode(text, encoding='utf-8', errors='strict'):
  """Python 3 pickles of bytes under protocol 2 call `_codecs.encode(str, 'latin1')`."""
  if codecs.lookup(encoding).name not in ('latin-1', 'iso8859-1', 'utf-8') or errors != 'strict':
    raise UnsafePickleError(f'unexpected _codecs.encode call with encoding {encoding!r}')
  return codecs.encode(text, encoding)


def _reconstructor(cls, base, state):
  """copy_reg._reconstructor (protocol 0/1 object pickles), limited to the stand-in classes."""
  if not (isinstance(cls, type) and issubclass(cls, (_ChumpyState, _SparseState))):
    raise UnsafePickleError(f'copy_reg._reconstructor called for {cls!r}')
  del base, state
  return cls()


_NUMPY_GLOBALS = {
    'numpy': {'ndarray': np.ndarray, 'dtype': np.dtype},
    'numpy.core.multiarray': {'_reconstruct': _multiarray._reconstruct,
                              'scalar': _multiarray.scalar},
    'numpy._core.multiarray': {'_reconstruct': _multiarray._reconstruct,
                               'scalar': _multiarray.scalar},
    '_codecs': {'encode': _codecs_encode},
    'copy_reg': {'_reconstructor': _reconstructor},
    'copyreg': {'_reconstructor': _reconstructor},
    '__builtin__': {'object': object, 'set': set, 'frozenset': frozenset},
    'builtins': {'object': object, 'set': set, 'frozenset': frozenset},
}
_SPARSE_MODULES = ('scipy.sparse.csc', 'scipy.sparse._csc', 'scipy.sparse.csr', 'scipy.sparse._csr',
                   'scipy.sparse.coo', 'scipy.sparse._coo', 'scipy.sparse.compressed',
                   'scipy.sparse._compressed')


class _MANOUnpickler(pickle.Unpickler):
  """Resolves only the globals an official or numpy-only MANO pickle contains."""

  def find_class(self, module: str, name: str) -> Any:
    if name in _NUMPY_GLOBALS.get(module, {}):
      return _NUMPY_GLOBALS[module][name]
    if module in _SPARSE_MODULES and name in ('csc_matrix', 'csr_matrix', 'coo_matrix'):
      return _sparse_class(name[:3])
    if module == 'chumpy' or module.startswith('chumpy.'):
      return type(f'_chumpy_{name}', (_ChumpyState,), {})
    raise UnsafePickleError(
        f'refusing to load global {module}.{name}: a MANO model file contains only numpy arrays, '
        'chumpy arrays and a scipy sparse matrix. The file is not a MANO model or has been '
        'tampered with.')


def to_plain(key: str, value: Any) -> Any:
  """Converts a stand-in (chumpy/sparse) to a numpy array; other values pass through."""
  if isinstance(value, (_ChumpyState, _SparseState)):
    return value.to_array(key)
  return value


def load_mano_pickle(path: str) -> dict[str, Any]:
  """Reads a MANO pickle into a dict of plain numpy arrays and strings.

  Raises:
    UnsafePickleError: the file references any global outside the allow-list.
    pickle.UnpicklingError / EOFError: the file is truncated or not a pickle (re-raised with the
      path in the message by `dir_jax.mano.asset.load_mano`).
  """
  with open(path, 'rb') as f:
    raw = _MANOUnpickler(f, encoding='latin1').load()
  if not isinstance(raw, dict):
    raise pickle.UnpicklingError(f'{path}: expected a dict of MANO arrays, got {type(raw).__name__}')
  return {str(k): to_plain(str(k), v) for k, v in raw.items()}
