"""Loading MANO files: official pickle layout, npz, the left fix, and every kind of bad input."""

import logging
import os
import pickle
import shutil

import numpy as np
import pytest

from dir_jax.mano import ManoAssetError, UnsafePickleError, load_mano, load_mano_pair
from dir_jax.mano.safe_pickle import load_mano_pickle


def test_pickle_and_npz_agree(fixture_mano_dir):
  for side in ('left', 'right'):
    from_pkl = load_mano(os.path.join(fixture_mano_dir, f'MANO_{side.upper()}.pkl'))
    from_npz = load_mano(os.path.join(fixture_mano_dir, f'MANO_{side.upper()}.npz'))
    assert from_pkl.side == from_npz.side == side
    for name in (
        'v_template',
        'shapedirs',
        'posedirs',
        'J_regressor',
        'weights',
        'faces',
        'hands_components',
        'hands_mean',
    ):
      np.testing.assert_array_equal(getattr(from_pkl, name), getattr(from_npz, name), err_msg=name)
    assert from_pkl.faces.dtype == np.int32 and from_pkl.v_template.dtype == np.float32


def test_left_fix_fires_with_log_line(fixture_mano_dir, caplog):
  with caplog.at_level(logging.INFO):
    pair = load_mano_pair(fixture_mano_dir)
  assert any('Fix shapedirs' in r.message for r in caplog.records)
  # After the fix the left hand's x shape directions mirror the right hand's.
  np.testing.assert_array_equal(pair.left.shapedirs[:, 0], -pair.right.shapedirs[:, 0])


def test_left_fix_does_not_fire_on_a_correct_left_hand(fixture_mano_dir, tmp_path, caplog):
  for side in ('left', 'right'):
    shutil.copy(os.path.join(fixture_mano_dir, f'MANO_{side.upper()}.npz'), tmp_path)
  fixed = load_mano_pair(str(tmp_path)).left
  np.savez(tmp_path / 'MANO_LEFT.npz', **{**dict(np.load(tmp_path / 'MANO_LEFT.npz')), 'shapedirs': fixed.shapedirs})
  caplog.clear()
  with caplog.at_level(logging.INFO):
    pair = load_mano_pair(str(tmp_path))
  assert not any('Fix shapedirs' in r.message for r in caplog.records)
  np.testing.assert_array_equal(pair.left.shapedirs, fixed.shapedirs)


def test_missing_file_says_where_to_download(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'mano\.is\.tue\.mpg\.de.*MANO_RIGHT\.pkl'):
    load_mano(str(tmp_path / 'MANO_RIGHT.pkl'))
  with pytest.raises(FileNotFoundError, match='no MANO_RIGHT.pkl or .npz in'):
    load_mano_pair(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='MANO folder not found'):
    load_mano_pair(str(tmp_path / 'nowhere'))


def test_truncated_pickle(fixture_mano_dir, tmp_path):
  data = open(os.path.join(fixture_mano_dir, 'MANO_RIGHT.pkl'), 'rb').read()
  path = tmp_path / 'MANO_RIGHT.pkl'
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(ManoAssetError, match='truncated or corrupt'):
    load_mano(str(path))


def test_wrong_shapes(fixture_mano_dir, tmp_path):
  raw = dict(np.load(os.path.join(fixture_mano_dir, 'MANO_RIGHT.npz')))
  raw['posedirs'] = raw['posedirs'][:, :, :100]
  np.savez(tmp_path / 'MANO_RIGHT.npz', **raw)
  with pytest.raises(ManoAssetError, match=r"'posedirs' has shape \(778, 3, 100\), expected \(778, 3, 135\)"):
    load_mano(str(tmp_path / 'MANO_RIGHT.npz'))


def test_wrong_kinematic_tree_and_missing_key(fixture_mano_dir, tmp_path):
  raw = dict(np.load(os.path.join(fixture_mano_dir, 'MANO_RIGHT.npz')))
  raw['kintree_table'] = raw['kintree_table'].copy()
  raw['kintree_table'][0, 5] = 0
  np.savez(tmp_path / 'MANO_RIGHT.npz', **raw)
  with pytest.raises(ManoAssetError, match='kinematic tree'):
    load_mano(str(tmp_path / 'MANO_RIGHT.npz'))
  del raw['weights']
  np.savez(tmp_path / 'MANO_LEFT.npz', **raw)
  with pytest.raises(ManoAssetError, match=r"missing MANO arrays \['weights'\]"):
    load_mano(str(tmp_path / 'MANO_LEFT.npz'))


class _Exploit:

  def __reduce__(self):
    return (os.system, ('touch pwned',))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / 'MANO_RIGHT.pkl'
  path.write_bytes(pickle.dumps({'v_template': _Exploit()}, protocol=2))
  with pytest.raises(UnsafePickleError, match=r'refusing to load global (posix|os|nt)\.system'):
    load_mano(str(path))
  assert not (tmp_path / 'pwned').exists()


def test_other_globals_are_refused(tmp_path):
  path = tmp_path / 'x.pkl'
  path.write_bytes(pickle.dumps({'a': np.float32}, protocol=2))  # a class, not an array
  with pytest.raises(UnsafePickleError, match='numpy.float32'):
    load_mano_pickle(str(path))


def test_sparse_formats_densify(tmp_path):
  import scipy.sparse  # pylint: disable=import-outside-toplevel

  dense = np.zeros((16, 778), np.float32)
  dense[np.arange(16), np.arange(16) * 7] = 1.0
  dense[3, 100] = 0.5
  for fmt in ('csc', 'csr', 'coo'):
    path = tmp_path / f'{fmt}.pkl'
    path.write_bytes(pickle.dumps({'J_regressor': scipy.sparse.coo_matrix(dense).asformat(fmt)}, protocol=2))
    np.testing.assert_array_equal(load_mano_pickle(str(path))['J_regressor'], dense, err_msg=fmt)
