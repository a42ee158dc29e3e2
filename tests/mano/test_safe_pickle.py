"""Crafted MANO pickles (made here, only ever read by our loader): no object arrays, no unbounded shapes.

Each file is written with `pickle.dumps` from stand-in objects whose `__reduce__` names numpy's own
reconstruction functions with hostile arguments; the test then loads it with `load_mano` only.
"""

import os
import pickle

import numpy as np
import pytest
import scipy.sparse
from numpy._core import multiarray

from dir_jax.mano import ManoAssetError, UnsafePickleError, load_mano
from dir_jax.mano.safe_pickle import MAX_ELEMENTS, load_mano_pickle

PLAIN_STATE = (3, '<', None, None, None, -1, -1, 0)


class _Reduce:
  """Pickles as `fn(*args)` followed by BUILD(state) when a state is given."""

  def __init__(self, fn, args, state=None):
    self.fn, self.args, self.state = fn, args, state

  def __reduce__(self):
    return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _dtype(spec, state=PLAIN_STATE):
  return _Reduce(np.dtype, (spec, False, True), state)


def _array(dtype, shape, raw):
  return _Reduce(multiarray._reconstruct, (np.ndarray, (0,), b'b'), (1, shape, dtype, False, raw))


def _sparse(**attrs):
  matrix = scipy.sparse.csc_matrix(np.eye(3, dtype=np.float32))
  for name, value in attrs.items():
    setattr(matrix, name, value)
  return matrix


ADDRESS = (0x41414141).to_bytes(8, 'little')  # what an attacker would put where numpy expects a PyObject*
HOSTILE = {
    'object array': _array(_dtype('O8', (3, '|', None, None, None, -1, -1, 0)), (1,), ADDRESS),
    'object array, (1538, 3)': _array(_dtype('O8', (3, '|', None, None, None, -1, -1, 0)), (1538, 3), ADDRESS),
    'object scalar': _Reduce(multiarray.scalar, (_dtype('O8', (3, '|', None, None, None, -1, -1, 0)), ADDRESS)),
    'object dtype with its flags': _array(_dtype('O8', (3, '|', None, None, None, -1, -1, 63)), (1,), ADDRESS),
    'void dtype': _array(_dtype('V8', (3, '|', None, None, None, 8, 1, 0)), (1,), ADDRESS),
    'structured dtype': _array(_dtype('i4,O', PLAIN_STATE), (1,), ADDRESS * 2),
    'float dtype with flags set': _array(_dtype('f8', (3, '<', None, None, None, -1, -1, 63)), (1,), ADDRESS),
    'float dtype with fields': _array(_dtype('f8', (3, '<', None, ('a',), {'a': 1}, -1, -1, 0)), (1,), ADDRESS),
    'dtype given as a list': _array(_dtype([('a', 'O')]), (1,), ADDRESS),
    'too few bytes for the shape': _array(_dtype('f8'), (1538, 3), ADDRESS),
    'too many bytes for the shape': _array(_dtype('f8'), (1,), ADDRESS * 2),
    'huge shape': _array(_dtype('f8'), (10**6, 10**6), ADDRESS),
    'negative shape': _array(_dtype('f8'), (-1,), ADDRESS),
    'list data (object array layout)': _array(_dtype('f8'), (2,), [1.0, 2.0]),
    'scalar with wrong length': _Reduce(multiarray.scalar, (_dtype('f8'), b'\x00' * 4)),
    'sparse with a huge _shape': _sparse(_shape=(10**6, 10**6)),
    'sparse index out of range': _sparse(indices=np.array([0, 1, 7], np.int32)),
    'sparse negative index': _sparse(indices=np.array([0, -1, 2], np.int32)),
    'sparse indptr past the data': _sparse(indptr=np.array([0, 1, 2, 9], np.int32)),
    'sparse float indices': _sparse(indices=np.array([0.0, 1.0, 2.0])),
}


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_arrays_are_refused_with_the_file_named(tmp_path, name):
  path = tmp_path / 'MANO_RIGHT.pkl'
  path.write_bytes(pickle.dumps({'v_template': HOSTILE[name], 'J_regressor': HOSTILE[name]}, protocol=2))
  with pytest.raises((UnsafePickleError, ManoAssetError)) as error:
    load_mano(str(path))
  assert str(path) in str(error.value)


def test_plain_numeric_arrays_and_scalars_still_load(tmp_path):
  values = {
      'f8': np.arange(6.0).reshape(2, 3),
      'f4 big-endian': np.arange(4, dtype='>f4'),
      'i4 fortran': np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
      'u4': np.array([2**32 - 1], np.uint32),
      'bool': np.array([True, False]),
      'scalar': np.float64(2.5),
      'empty': np.zeros((0, 3)),
  }
  path = tmp_path / 'plain.pkl'
  path.write_bytes(pickle.dumps(values, protocol=2))
  loaded = load_mano_pickle(str(path))
  for key, value in values.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert np.asarray(loaded[key]).dtype == np.asarray(value).dtype.newbyteorder('='), key
  assert loaded['f4 big-endian'].dtype.isnative


def test_official_layout_still_loads(fixture_mano_dir):
  asset = load_mano(os.path.join(fixture_mano_dir, 'MANO_RIGHT.pkl'))
  assert asset.v_template.shape == (778, 3) and asset.J_regressor.shape == (16, 778)


def test_bound_covers_mano():
  assert 778 * 3 * 135 < MAX_ELEMENTS < 10**8
