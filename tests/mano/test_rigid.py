"""Rigid motions and mirroring of MANO parameters reproduce the moved / mirrored vertices."""

import numpy as np
import pytest
import jax.numpy as jnp

from data_prep import synthetic_mano
from dir_jax.mano import gt_mano, load_mano_pair, rigid


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
  folder = tmp_path_factory.mktemp('mano')
  synthetic_mano.write_all(str(folder), seed=3)
  return load_mano_pair(str(folder))


def _random_params(rng):
  angle = rng.normal(size=3)
  theta = np.linalg.norm(angle)
  k = np.array([[0, -angle[2], angle[1]], [angle[2], 0, -angle[0]], [-angle[1], angle[0], 0]]) / theta
  rot = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
  return {
      'root_rotmat': rot.astype(np.float32),
      'hand_pose': rng.normal(size=45).astype(np.float32) * 0.5,
      'betas': rng.normal(size=10).astype(np.float32),
      'trans': rng.normal(size=3).astype(np.float32) * 0.1,
  }


def _verts(asset, params):
  verts, _ = gt_mano(asset, *(jnp.asarray(params[k])[None] for k in rigid.PARAM_KEYS))
  return np.asarray(verts[0], np.float64)


@pytest.mark.parametrize('side', ['left', 'right'])
def test_transform_params_moves_vertices_rigidly(pair, side):
  rng = np.random.default_rng(0)
  params = _random_params(rng)
  rotation = _random_params(rng)['root_rotmat'].astype(np.float64)
  translation = np.array([0.1, -0.2, 0.7])
  moved = rigid.transform_params(pair[side], params, rotation, translation)
  expected = _verts(pair[side], params) @ rotation.T + translation
  np.testing.assert_allclose(_verts(pair[side], moved), expected, atol=2e-6)


@pytest.mark.parametrize('source,target', [('right', 'left'), ('left', 'right')])
def test_mirror_params_gives_the_mirror_image_as_the_other_hand(pair, source, target):
  params = _random_params(np.random.default_rng(1))
  mirrored = rigid.mirror_params(pair[source], pair[target], params)
  expected = _verts(pair[source], params) * np.array([-1.0, 1.0, 1.0])
  # The left file's shapedirs defect is repaired by load_mano_pair, so the pair mirrors exactly.
  np.testing.assert_allclose(_verts(pair[target], mirrored), expected, atol=2e-6)
  back = rigid.mirror_params(pair[target], pair[source], mirrored)
  for key in rigid.PARAM_KEYS:
    np.testing.assert_allclose(back[key], params[key], atol=1e-5)
