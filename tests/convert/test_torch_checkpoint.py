"""The state-dict converter: key mapping, layouts, and precise errors."""

import json

import jax
import numpy as np
import pytest
import torch

from dir_jax import checkpoint
from dir_jax.convert import export_orbax, fixture
from dir_jax.convert.torch_checkpoint import (
    ConversionError,
    convert_state_dict,
    import_torchvision_resnet50,
    load_torch_checkpoint,
)
from dir_jax.mano import load_mano_pair
from dir_jax.model.dir import DIR


@pytest.fixture(scope='module')
def setup(fixture_dir):
  model = DIR()
  mano = load_mano_pair(f'{fixture_dir}/mano')
  images = np.zeros((1, 256, 256, 3), np.float32)
  template = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, mano), images)
  weights = fixture.recipe_weights(fixture_dir)
  # A real checkpoint also holds the constants the recipe does not draw (MANO buffers, grids, counters).
  with open(f'{fixture_dir}/state_dict_shapes.json') as f:
    for key, shape, _ in json.load(f):
      weights.setdefault(key, np.zeros(shape, np.float32))
  return model, template, weights


def test_report_counts(setup):
  model, template, weights = setup
  _, report = convert_state_dict(weights, template, model.config.stages)
  # 963 entries: 556 used params + 212 BN stats loaded; 60 MANO + 2 grid + 106 counters + 1 loss ignored;
  # backbone.fc (2) and STEblocks.0 (2 x 12) unused (docs/architecture.md#checkpoint-conversion).
  assert len(report.loaded) == 556 + 212
  assert len(report.ignored) == 60 + 2 + 106 + 1
  assert len(report.unused) == 2 + 24
  assert report.missing == []


def test_layouts(setup):
  model, template, weights = setup
  variables, _ = convert_state_dict(weights, template, model.config.stages)
  np.testing.assert_array_equal(
      variables['params']['backbone']['conv1']['kernel'], weights['backbone.conv1.weight'].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
      variables['params']['init_regressor']['mano_left']['kernel'], weights['init_regressor.mano_left.weight'].T
  )
  proj3 = variables['params']['decoder']['group_1']['projecter']
  np.testing.assert_array_equal(
      proj3['pos_emb_left']['0']['kernel'][0], weights['decoder.projecter_3.pos_emb_left.0.weight'][:, :, 0].T
  )
  np.testing.assert_array_equal(
      variables['batch_stats']['decoder']['group_0']['skip_layer']['bn1']['var'],
      weights['decoder.skip_layer4.bn1.running_var'],
  )


def test_missing_key(setup):
  model, template, weights = setup
  broken = dict(weights)
  del broken['decoder.projecter_3.gcn_left.gconv_layers.2.gconv.W']
  with pytest.raises(
      ConversionError, match=r'not in the checkpoint: .*group_1/projecter/gcn_left/gconv_layers/2/gconv/W'
  ):
    convert_state_dict(broken, template, model.config.stages)


def test_extra_key(setup):
  model, template, weights = setup
  with pytest.raises(ConversionError, match=r'match no model variable: decoder\.extra_head\.weight'):
    convert_state_dict(
        {**weights, 'decoder.extra_head.weight': np.zeros((3, 3), np.float32)}, template, model.config.stages
    )


def test_wrong_shape(setup):
  model, template, weights = setup
  broken = {**weights, 'init_regressor.offset.weight': np.zeros((4, 2048), np.float32)}
  with pytest.raises(ConversionError, match=r'init_regressor\.offset\.weight: shape \(4, 2048\)'):
    convert_state_dict(broken, template, model.config.stages)


def test_pth_with_net_and_module_prefix(tmp_path):
  state = {'module.backbone.bn1.weight': torch.ones(64), 'module.backbone.bn1.num_batches_tracked': torch.tensor(3)}
  torch.save({'net': state}, tmp_path / 'ckpt.pth')
  loaded = load_torch_checkpoint(str(tmp_path / 'ckpt.pth'))
  assert set(loaded) == {'backbone.bn1.weight', 'backbone.bn1.num_batches_tracked'}
  np.savez(tmp_path / 'ckpt.npz', **{k: v.numpy() for k, v in state.items()})
  assert set(load_torch_checkpoint(str(tmp_path / 'ckpt.npz'))) == set(loaded)
  with pytest.raises(FileNotFoundError, match='checkpoint not found'):
    load_torch_checkpoint(str(tmp_path / 'nope.pth'))


def test_torchvision_resnet50_import_reproduces_backbone_features(setup, fixture_dir):
  """torchvision's ResNet-50 names are DIR's backbone names without the prefix: importing the
  fixture's backbone as a torchvision state dict into a fresh model reproduces the reference's c3/c4."""
  model, template, weights = setup
  torchvision_state = {k[len('backbone.') :]: v for k, v in weights.items() if k.startswith('backbone.')}
  assert 'fc.weight' in torchvision_state and 'layer4.2.bn3.running_var' in torchvision_state
  mano = load_mano_pair(f'{fixture_dir}/mano')
  images = np.load(f'{fixture_dir}/inputs.npz')['img'].transpose(0, 2, 3, 1)
  fresh = jax.jit(lambda x: model.init(jax.random.PRNGKey(1), x, mano))(images[:1])
  variables, report = import_torchvision_resnet50(torchvision_state, fresh)
  assert report.unused == ['backbone.fc.weight', 'backbone.fc.bias'] and not report.missing
  np.testing.assert_array_equal(
      variables['params']['init_regressor']['mano_left']['kernel'],
      fresh['params']['init_regressor']['mano_left']['kernel'],
  )
  _, state = jax.jit(lambda v, x: model.apply(v, x, mano, mutable=['intermediates']))(variables, images)
  reference = np.load(f'{fixture_dir}/eval_outputs.npz')
  for level in ('c3', 'c4'):
    ours = np.asarray(state['intermediates'][f'backbone_{level}'][0]).transpose(0, 3, 1, 2)
    ref = reference[f'backbone.{level}']
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())  # compare_reference's tolerance


def test_torchvision_import_rejects_a_wrong_shape(setup):
  model, template, weights = setup
  state = {k[len('backbone.') :]: v for k, v in weights.items() if k.startswith('backbone.')}
  state['layer2.0.conv2.weight'] = state['layer2.0.conv2.weight'][:, :64]
  with pytest.raises(ConversionError, match=r'layer2\.0\.conv2\.weight: shape'):
    import_torchvision_resnet50(state, template)


def test_export_orbax_round_trip(setup, fixture_dir, tmp_path):
  model, template, weights = setup
  path = str(tmp_path / 'torch.pth')
  torch.save({'net': {f'module.{k}': torch.from_numpy(np.asarray(v)) for k, v in weights.items()}}, path)
  out = export_orbax.main(['export_orbax', '--torch_checkpoint', path, '--out', str(tmp_path / 'orbax')])
  assert out == 0
  restored_model, variables, step = checkpoint.restore_variables(str(tmp_path / 'orbax'))
  assert restored_model == model and step == 0
  expected, _ = convert_state_dict(weights, template, model.config.stages)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables), expected)


@pytest.mark.parametrize(
    'name, content',
    [
        ('notes.pth', b'just some text\n' * 40),
        ('empty.pth', b''),
        ('zip.pth', b'PK\x03\x04' + b'\x00' * 60),
        ('bad.npz', b'not a zip'),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, name, content):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(ConversionError, match=f'{path}: not a'):
    load_torch_checkpoint(str(path))
