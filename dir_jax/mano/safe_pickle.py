"""A restricted unpickler for the official MANO model files, with no chumpy installed.

The official `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` are Python 2 pickles whose arrays are numpy arrays,
`chumpy.ch.Ch` objects (a plain object whose pickled state holds its value under `x`) and a scipy
sparse `J_regressor`. This unpickler rebuilds exactly those as numpy arrays and refuses every other
global, so a file that tries to import `os.system` (or anything else) raises `UnsafePickleError`
instead of running code. scipy itself is not needed: sparse matrices are densified from their state.

numpy's own reconstruction functions are never handed to the pickle: an array or scalar is rebuilt by
this module from its pickled (shape, dtype, bytes) only for plain numeric dtypes (bool, integers,
floats; no object, void, structured or sub-array dtypes, no dtype flags), with the byte count checked
against shape x item size and every shape bounded (`MAX_ELEMENTS`) before anything is allocated. An
object dtype built from attacker bytes would make numpy read those bytes as pointers.
"""

import codecs
import pickle
from typing import Any

import numpy as np

MAX_ELEMENTS = 20_000_000  # per array; the largest MANO array (posedirs) has 315,090
_MAX_NDIM = 8
_NUMERIC_KINDS = 'biuf'  # bool, signed and unsigned integers, floats


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global, or builds an array, that a MANO model file never contains."""


def _checked_shape(shape: Any, what: str) -> tuple[int, ...]:
  if not isinstance(shape, (tuple, list)) or len(shape) > _MAX_NDIM:
    raise UnsafePickleError(f'{what}: shape {shape!r} is not a tuple of at most {_MAX_NDIM} sizes')
  if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_ELEMENTS for n in shape):
    raise UnsafePickleError(f'{what}: shape {shape!r} has a size that is not an integer in [0, {MAX_ELEMENTS}]')
  if int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
    raise UnsafePickleError(f'{what}: shape {tuple(shape)} has more than {MAX_ELEMENTS} elements')
  return tuple(shape)


class _Dtype:
  """Stand-in for `numpy.dtype(spec, align, copy)` plus its BUILD state; `.dtype` checks both."""

  def __init__(self, spec=None, align=False, copy=True):
    del align, copy
    self.spec = spec
    self.state = None

  def __setstate__(self, state):
    self.state = state

  @property
  def dtype(self) -> np.dtype:
    if not isinstance(self.spec, str) or len(self.spec) > 8:
      raise UnsafePickleError(f'array dtype {self.spec!r}: only plain numeric type codes such as "f8" are allowed')
    try:
      dtype = np.dtype(self.spec)
    except TypeError as e:
      raise UnsafePickleError(f'array dtype {self.spec!r} is not a numpy type code') from e
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
      raise UnsafePickleError(f'array dtype {self.spec!r} (kind {dtype.kind!r}) is not bool, integer or float')
    state = self.state
    if state is not None:
      if (
          not isinstance(state, tuple)
          or len(state) not in (8, 9)
          or state[1] not in ('<', '>', '|', '=')
          or state[2:5] != (None, None, None)
          or state[5:8] != (-1, -1, 0)
      ):
        raise UnsafePickleError(f'array dtype {self.spec!r}: unexpected dtype state {state!r} (fields, flags or sizes)')
      if state[1] in '<>':
        dtype = dtype.newbyteorder(state[1])
    return dtype


def _array_from_bytes(dtype: np.dtype, shape: tuple[int, ...], raw: Any, fortran: bool, what: str) -> np.ndarray:
  if isinstance(raw, str):  # Python 2 pickles read with encoding='latin1'
    raw = raw.encode('latin1')
  if not isinstance(raw, bytes):
    raise UnsafePickleError(f'{what}: data of type {type(raw).__name__}, expected raw bytes')
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    raise UnsafePickleError(f'{what}: {len(raw)} data bytes for shape {shape} of {dtype} ({expected} expected)')
  flat = np.frombuffer(raw, dtype=dtype)
  return flat.reshape(shape, order='F' if fortran else 'C').astype(dtype.newbyteorder('='), copy=True)


class _Array:
  """Stand-in for `numpy._core.multiarray._reconstruct(ndarray, ...)` and its BUILD state."""

  def __init__(self, cls=None, shape=None, typecode=None):
    del shape, typecode
    if cls is not _NDARRAY:
      raise UnsafePickleError(f'_reconstruct called for {cls!r}, expected numpy.ndarray')
    self.value = None

  def __setstate__(self, state):
    if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], _Dtype):
      raise UnsafePickleError('array state is not (version, shape, dtype, fortran, data)')
    _, shape, dtype, fortran, raw = state
    shape = _checked_shape(shape, 'array')
    self.value = _array_from_bytes(dtype.dtype, shape, raw, bool(fortran), 'array')

  def __array__(self, dtype=None, copy=None):
    del copy
    if self.value is None:
      raise UnsafePickleError('array without pickled data')
    return self.value if dtype is None else self.value.astype(dtype)


def _scalar(dtype, raw=None):
  """Stand-in for `numpy._core.multiarray.scalar(dtype, bytes)`: plain numeric scalars only."""
  if not isinstance(dtype, _Dtype):
    raise UnsafePickleError(f'numpy scalar of dtype {dtype!r}')
  return _array_from_bytes(dtype.dtype, (), raw, False, 'numpy scalar')[()]


_NDARRAY = object()  # what the pickle gets for `numpy.ndarray`: only a marker for `_reconstruct`


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
          'chumpy installed, e.g. np.array(value), and save it as .npz.'
      )
    return _plain_array(self.state['x'], key)


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
    if not isinstance(st, dict):
      raise UnsafePickleError(f'MANO entry {key!r}: sparse matrix state is not a dict')
    shape = st.get('_shape', st.get('shape', ()))
    shape = _checked_shape(
        tuple(int(n) if isinstance(n, (int, np.integer)) else n for n in shape), f'MANO entry {key!r}'
    )
    if len(shape) != 2:
      raise ValueError(f'MANO entry {key!r}: sparse matrix without a 2-D shape')
    data = _plain_array(st['data'], key)
    if data.ndim != 1:
      raise ValueError(f'MANO entry {key!r}: sparse data is not 1-D')
    if self.format == 'coo':
      coords = st.get('coords', (None, None))
      rows, cols = (
          _index_array(st.get(name, coord), bound, key)
          for name, coord, bound in (('row', coords[0], shape[0]), ('col', coords[1], shape[1]))
      )
    else:
      major_len, minor_len = shape if self.format == 'csr' else shape[::-1]
      indptr = _index_array(st['indptr'], len(data) + 1, key)
      if len(indptr) != major_len + 1 or indptr[0] != 0 or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
        raise ValueError(f'MANO entry {key!r}: sparse indptr is inconsistent with shape {shape} and {len(data)} values')
      major = np.repeat(np.arange(major_len), np.diff(indptr))
      minor = _index_array(st['indices'], minor_len, key)
      rows, cols = (minor, major) if self.format == 'csc' else (major, minor)
    if not len(rows) == len(cols) == len(data):
      raise ValueError(f'MANO entry {key!r}: sparse index and data lengths differ')
    dense = np.zeros(shape, dtype=data.dtype)
    np.add.at(dense, (rows, cols), data)
    return dense


def _plain_array(value: Any, key: str) -> np.ndarray:
  """A rebuilt array (`_Array`) or a nested list of numbers as a numeric numpy array."""
  array = np.asarray(value)
  if array.dtype.kind not in _NUMERIC_KINDS:
    raise UnsafePickleError(f'MANO entry {key!r}: array of dtype {array.dtype}, expected numbers')
  return array


def _index_array(value: Any, bound: int, key: str) -> np.ndarray:
  """1-D integer indices, all in [0, bound)."""
  index = _plain_array(value, key)
  if index.ndim != 1 or index.dtype.kind not in 'iu' or (index.size and (index.min() < 0 or index.max() >= bound)):
    raise ValueError(f'MANO entry {key!r}: sparse indices are not 1-D integers in [0, {bound})')
  return index.astype(np.int64)


def _sparse_class(fmt: str) -> type:
  return type(f'_{fmt}_matrix', (_SparseState,), {'format': fmt})


def _codecs_encode(text, encoding='utf-8', errors='strict'):
  """Python 3 pickles of bytes under protocol 2 call `_codecs.encode(str, 'latin1')`."""
  if codecs.lookup(encoding).name not in ('latin-1', 'iso8859-1', 'utf-8') or errors != 'strict':
    raise UnsafePickleError(f'unexpected _codecs.encode call with encoding {encoding!r}')
  return codecs.encode(text, encoding)


def _bytes(*args):
  """`bytes()`: Python 3 pickles write empty bytes under protocol 2 as a call of `bytes` with no argument."""
  if args:
    raise UnsafePickleError(f'bytes called with {len(args)} argument(s); only bytes() is expected')
  return b''


def _reconstructor(cls, base, state):
  """copy_reg._reconstructor (protocol 0/1 object pickles), limited to the stand-in classes."""
  if not (isinstance(cls, type) and issubclass(cls, (_ChumpyState, _SparseState))):
    raise UnsafePickleError(f'copy_reg._reconstructor called for {cls!r}')
  del base, state
  return cls()


_NUMPY_GLOBALS = {
    'numpy': {'ndarray': _NDARRAY, 'dtype': _Dtype},
    'numpy.core.multiarray': {'_reconstruct': _Array, 'scalar': _scalar},
    'numpy._core.multiarray': {'_reconstruct': _Array, 'scalar': _scalar},
    '_codecs': {'encode': _codecs_encode},
    'copy_reg': {'_reconstructor': _reconstructor},
    'copyreg': {'_reconstructor': _reconstructor},
    '__builtin__': {'object': object, 'set': set, 'frozenset': frozenset, 'bytes': _bytes},
    'builtins': {'object': object, 'set': set, 'frozenset': frozenset, 'bytes': _bytes},
}
_SPARSE_MODULES = (
    'scipy.sparse.csc',
    'scipy.sparse._csc',
    'scipy.sparse.csr',
    'scipy.sparse._csr',
    'scipy.sparse.coo',
    'scipy.sparse._coo',
    'scipy.sparse.compressed',
    'scipy.sparse._compressed',
)


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
        'tampered with.'
    )


def to_plain(key: str, value: Any) -> Any:
  """Converts a stand-in (array, chumpy, sparse) to a numpy array; other values pass through."""
  if isinstance(value, (_ChumpyState, _SparseState)):
    return value.to_array(key)
  if isinstance(value, _Array):
    return np.asarray(value)
  if isinstance(value, _Dtype):
    raise UnsafePickleError(f'MANO entry {key!r} is a bare dtype')
  return value


def load_mano_pickle(path: str) -> dict[str, Any]:
  """Reads a MANO pickle into a dict of plain numpy arrays and strings.

  Raises:
    UnsafePickleError: the file references any global outside the allow-list or builds an array
      other than a plain numeric one of bounded size.
    pickle.UnpicklingError: any other failure (truncated, not a pickle, inconsistent arrays), with
      the original error's type and message (the path is added by `dir_jax.mano.asset.load_mano`).
  """
  try:
    with open(path, 'rb') as f:
      raw = _MANOUnpickler(f, encoding='latin1').load()
    if not isinstance(raw, dict):
      raise pickle.UnpicklingError(f'expected a dict of MANO arrays, got {type(raw).__name__}')
    return {str(k): to_plain(str(k), v) for k, v in raw.items()}
  except pickle.UnpicklingError:
    raise
  except Exception as e:  # every failure of a hostile or damaged file becomes the loader's error
    raise pickle.UnpicklingError(f'{type(e).__name__}: {e}') from e
