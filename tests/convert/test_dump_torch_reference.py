"""dump_torch_reference's plumbing, run on a small stand-in for the authors' `models/dir.py`.

CI has no checkout of the authors' code; the stand-in below has DIR's constructor signature, module
names, output dicts, the `lineseg_dists` method the script records and a training forward with a loss
dict, at toy sizes, and imports torchvision and timm at module level as the real file does. The real
run needs their checkout and is done by hand: with the fixture's recipe weights and images it
reproduces the fixture's eval_outputs.npz to 3.4e-6 relative, and with `--train_steps 3` the
fixture's targets and step-1 train.npz arrays bit for bit (docs/parity.md).
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tools import dump_torch_reference as dump_mod

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAND_IN_DIR_PY = '''
import os
import pickle

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.layers import DropPath
from torchvision.models import resnet50, ResNet50_Weights
# EXTRA_IMPORT

C = 4        # channels everywhere
VERTS = 10   # mesh vertices
PARENT = [0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]


def stage_result(params, offset, mesh_basis):
  """params (B, 2, 64) -> the reference's stage dict (toy geometry)."""
  out = {'pd_offset': offset, 'pd_rel_joint': None}
  for i, hand in enumerate(('left', 'right')):
    p = params[:, i]
    xyz = p[:, :63].reshape(-1, 21, 3) * 0.1
    mesh = xyz[:, :VERTS] + mesh_basis
    scale, trans = p[:, 61:62, None] * 0 + 4.0, p[:, 62:64, None].transpose(1, 2) * 0.01
    out.update({
      f'pd_mano_para_{hand}': p, f'pd_mano_pose_{hand}': p[:, :51], f'pd_proj_{hand}': p[:, 61:],
      f'pd_joint_xyz_{hand}': xyz, f'pd_mesh_xyz_{hand}': mesh,
      f'pd_joint_uv_{hand}': scale * xyz[..., :2] + trans, f'pd_mesh_uv_{hand}': scale * mesh[..., :2] + trans,
    })
  return out


class ManoStandIn(nn.Module):
  def __init__(self, mano_path, side):
    super().__init__()
    with open(os.path.join(mano_path, 'MANO_%s.pkl' % side.upper()), 'rb') as f:
      self.register_buffer('th_v_template', torch.tensor(pickle.load(f)['v_template']))

  def forward(self, pose, betas):
    """(B, 51), (B, 10) -> wrist-centred vertices (B, 778, 3) and joints (B, 21, 3) (toy geometry)."""
    verts = self.th_v_template[None] + pose[:, None, :3] * 0.01 + betas[:, None, :3] * 0.001
    joints = verts[:, :21]
    return verts - joints[:, :1], joints - joints[:, :1]


class Backbone(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(3, C, 1)
    self.fc = nn.Linear(C, 2)  # never called, as ResNet-50's classifier in DIR: no gradient

  def forward(self, x):
    return [F.avg_pool2d(self.conv1(x), k) for k in (4, 8, 16, 32)]


class InitRegressor(nn.Module):
  def __init__(self, mano_path):
    super().__init__()
    self.mano_layer_left, self.mano_layer_right = ManoStandIn(mano_path, 'left'), ManoStandIn(mano_path, 'right')
    self.attention_left = nn.Sequential(nn.Conv2d(C, 1, 1), nn.Sigmoid())
    self.attention_right = nn.Sequential(nn.Conv2d(C, 1, 1), nn.Sigmoid())
    self.mano = nn.Linear(C, 128)
    self.offset = nn.Linear(C, 3)

  def forward(self, c4):
    pooled = [(c4 * a(c4)).mean((2, 3)) for a in (self.attention_left, self.attention_right)]
    params = torch.stack([self.mano(p) for p in pooled], 1)[:, :, :64]
    return stage_result(params, self.offset(c4.mean((2, 3))), self.mano_layer_left.th_v_template[:VERTS])


class Joint2Bone(nn.Module):
  def __init__(self, size, distance):
    super().__init__()
    self.feature_size, self.bone_num, self.distance = size, 20, distance
    x = torch.arange(size) + 0.5
    gy, gx = torch.meshgrid(x, x, indexing='ij')
    self.register_buffer('img_gird', torch.stack((gx, gy), -1).reshape(-1, 2))
    for hand in ('left', 'right'):
      setattr(self, 'img2joint_' + hand, nn.Conv1d(C, C, 1))
      setattr(self, 'pos_emb_' + hand, nn.Sequential(nn.Conv1d(3, C, 1), nn.BatchNorm1d(C)))
      setattr(self, 'gcn_' + hand, nn.Linear(C, C))
    self.global_pos_emb = nn.Conv1d(3, C, 1)
    self.interaction = nn.Sequential(nn.Linear(C, C), DropPath(0.0))
    self.proj_feat_emb = nn.Conv1d(C, C, 1)
    self.regressor = nn.Linear(21 * C, 128)
    self.fusion = nn.Conv2d(2 * 20 * C, C, 1)
    self.e_0 = nn.Parameter(torch.ones(1))  # enters multiplied by 0: an exactly zero gradient, as DIR's GCN e_0

  def lineseg_dists(self, p, a, b):
    return torch.minimum(torch.hypot(*(p - a).T), torch.hypot(*(p - b).T))

  def bone_proj(self, uv, feat):
    B, S = uv.shape[0], self.feature_size
    uv = (uv + 1) / 2 * S
    a = uv[:, PARENT].reshape(B, 1, 20, 2).repeat(1, S * S, 1, 1).reshape(-1, 2)
    b = uv[:, 1:].reshape(B, 1, 20, 2).repeat(1, S * S, 1, 1).reshape(-1, 2)
    p = self.img_gird.reshape(1, S * S, 1, 2).repeat(B, 1, 20, 1).reshape(-1, 2)
    mask = self.lineseg_dists(p, a, b).reshape(B, S * S, 20, 1) < self.distance
    bones = (feat[:, PARENT] + feat[:, 1:]).reshape(B, 1, 20, -1) * mask
    return bones.reshape(B, S, S, -1).permute(0, 3, 1, 2)

  def forward(self, img_feat, prev):
    # Same call order as the reference: each step for the left hand, then the right.
    B, hands = img_feat.shape[0], ('left', 'right')
    uv = {h: prev['pd_joint_uv_' + h] for h in hands}
    xyz = {h: prev['pd_joint_xyz_' + h].transpose(1, 2) for h in hands}
    x = {h: getattr(self, 'img2joint_' + h)(F.grid_sample(img_feat, uv[h].unsqueeze(1), align_corners=False).squeeze(2))
         for h in hands}
    x = {h: x[h] + getattr(self, 'pos_emb_' + h)(xyz[h]) for h in hands}
    x = {h: getattr(self, 'gcn_' + h)(x[h].transpose(1, 2)) + 0 * self.e_0 for h in hands}
    x = {h: x[h] + self.global_pos_emb(xyz[h]).transpose(1, 2) for h in hands}
    y = self.interaction(torch.cat([x['left'], x['right']], 1))
    params = torch.stack([self.regressor(y[:, :21].reshape(B, -1)), self.regressor(y[:, 21:].reshape(B, -1))], 1)
    result = stage_result(params[:, :, :64], prev['pd_offset'] + 0.1, prev['pd_mesh_xyz_left'][0] * 0)
    z = {h: self.proj_feat_emb(y[:, s].transpose(1, 2)).transpose(1, 2)
         for h, s in (('left', slice(0, 21)), ('right', slice(21, 42)))}
    bones = [self.bone_proj(result['pd_joint_uv_' + h], z[h]) for h in ('left', 'right')]
    feats = {'img_feat': self.fusion(torch.cat(bones, 1)), 'joint_feat_left': z['left'],
             'joint_feat_right': z['right'], 'vis_img_feat': bones[0] + bones[1]}
    return result, feats


class Decoder(nn.Module):
  def __init__(self):
    super().__init__()
    for s, size, dist in (('4', 16, 1), ('3', 32, 2)):
      setattr(self, 'skip_layer' + s, nn.Conv2d(C, C, 1))
      setattr(self, 'fusion_layer' + s, nn.Conv2d(2 * C, C, 1))
      setattr(self, 'projecter_' + s, Joint2Bone(size, dist))
      setattr(self, 'enhance_layer' + s, nn.Conv2d(2 * C, C, 1))
    self.seg = nn.Sequential(nn.Conv2d(C, C, 1), nn.BatchNorm2d(C), nn.Conv2d(C, 3, 1))
    self.dense = nn.Conv2d(C, 3, 1)

  def forward(self, feats, prev):
    x, outputs = feats[3], []
    for s, skip in (('4', feats[2]), ('3', feats[1])):
      up = F.interpolate(x, scale_factor=2, mode='bilinear')
      fused = getattr(self, 'fusion_layer' + s)(torch.cat([up, getattr(self, 'skip_layer' + s)(skip)], 1))
      prev, out_feat = getattr(self, 'projecter_' + s)(fused, prev)
      x = getattr(self, 'enhance_layer' + s)(torch.cat([fused, out_feat['img_feat']], 1))
      outputs.append(dict(prev, **out_feat))
    return {'result_list': outputs, 'seg': self.seg(x), 'dense': self.dense(x), 'proj_feat': out_feat['vis_img_feat']}


class DIR(nn.Module):
  def __init__(self, joint_num, mano_path, root_joint=0):
    super().__init__()
    assert joint_num == 21 and root_joint == 0
    pretrained = resnet50(weights=ResNet50_Weights.IMAGENET1K_V2)  # the script must skip this download
    assert not pretrained.state_dict()
    self.backbone = Backbone()
    self.init_regressor = InitRegressor(mano_path)
    self.decoder = Decoder()
    self.faces = torch.zeros(3, dtype=torch.long).cuda()  # as the loss helpers do
    self.seg_loss = nn.CrossEntropyLoss(weight=torch.tensor([0.1, 0.45, 0.45]))

  def forward(self, input, target, meta_info):
    """As DIR.forward: inputs moved to CUDA unconditionally; in train mode a loss dict over the stages."""
    feats = self.backbone(input['img'].cuda())
    init = self.init_regressor(feats[-1])
    decoded = self.decoder(feats, init)
    loss = {}
    if self.training:
      size = decoded['seg'].shape[-1]
      seg = F.interpolate(target['seg'].cuda(), (size, size), mode='nearest').long().squeeze(1)
      loss['seg'] = self.seg_loss(decoded['seg'], seg) * 0.1
      loss['dense'] = F.huber_loss(decoded['dense'], F.interpolate(target['dense'].cuda(), (size, size),
                                                                   mode='bilinear'), delta=0.01)
      offset = (meta_info['center_right'].cuda() - meta_info['center_left'].cuda()).squeeze(1) / 0.15
      for s, out in enumerate([init] + decoded['result_list']):
        for hand in ('left', 'right'):
          loss['joint_%s_uv_%d' % (hand, s)] = F.huber_loss(
              out['pd_joint_uv_' + hand], target['joint_2d_' + hand].cuda()[..., :2], delta=0.01) * 10
          centred = (target['joint_3d_' + hand].cuda() - meta_info['center_' + hand].cuda()) / 0.15
          loss['joint_%s_xyz_%d' % (hand, s)] = F.huber_loss(out['pd_joint_xyz_' + hand] / 0.15, centred,
                                                             delta=0.01) * 10
        loss['offset_%d' % s] = F.huber_loss(out['pd_offset'], offset, delta=0.01) * 10
    return [init] + decoded['result_list'], loss
'''


def write_reference(root, extra_import=''):
  """Writes the stand-in checkout (models/dir.py) under `root`."""
  os.makedirs(os.path.join(root, 'models'))
  open(os.path.join(root, 'models', '__init__.py'), 'w').close()
  with open(os.path.join(root, 'models', 'dir.py'), 'w') as f:
    f.write(STAND_IN_DIR_PY.replace('# EXTRA_IMPORT', extra_import))
  return str(root)


# Top-level modules the script or the stand-in adds to sys.modules; restored after every test so
# the stand-ins never leak into other tests.
_ISOLATED = ('models', 'cv2', 'imgaug', 'yacs', 'timm', 'torchvision', 'chumpy', 'manopth', 'mano', 'utils')


@pytest.fixture(autouse=True)
def isolated_imports():
  path = list(sys.path)
  saved = {k: v for k, v in sys.modules.items() if k.split('.')[0] in _ISOLATED}
  yield
  sys.path[:] = path
  for k in [k for k in sys.modules if k.split('.')[0] in _ISOLATED]:
    del sys.modules[k]
  sys.modules.update(saved)


@pytest.fixture
def setup(tmp_path):
  """(reference path, mano dir, two image paths, a {'net': state_dict} checkpoint path, its state dict)."""
  reference = write_reference(tmp_path / 'ref')
  mano = tmp_path / 'mano'
  mano.mkdir()
  rng = np.random.default_rng(0)
  for side in ('RIGHT', 'LEFT'):
    with open(mano / f'MANO_{side}.pkl', 'wb') as f:
      pickle.dump({'v_template': rng.normal(0, 0.05, (778, 3)).astype(np.float32)}, f)
  images = []
  for i in range(2):
    images.append(str(tmp_path / f'img{i}.png'))
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(images[-1])
  dump_mod.install_stand_ins()
  model = dump_mod.build_model(dump_mod.import_reference(reference), str(mano))
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
  state = model.state_dict()
  checkpoint = str(tmp_path / 'ckpt.pth')
  torch.save({'net': state}, checkpoint)
  return reference, str(mano), images, checkpoint, state


def test_writes_fixture_layout(setup, tmp_path, fixture_dir):
  reference, mano, images, checkpoint, state = setup
  out = str(tmp_path / 'out')
  assert (
      dump_mod.main(
          [
              'dump',
              '--reference_code',
              reference,
              '--torch_checkpoint',
              checkpoint,
              '--mano_dir',
              mano,
              '--images',
              ','.join(images),
              '--out',
              out,
          ]
      )
      == 0
  )
  assert sorted(os.listdir(out)) == ['eval_outputs.npz', 'index.json', 'inputs.npz', 'summary.json']
  outputs = np.load(os.path.join(out, 'eval_outputs.npz'))
  with open(os.path.join(fixture_dir, 'index.json')) as f:
    fixture_index = json.load(f)
  # Same keys in the same order as the authors' fixture; shapes here are the stand-in's toy sizes.
  assert outputs.files == list(fixture_index['eval_outputs.npz'])
  assert outputs['stage2.pd_joint_uv_left'].shape == (2, 21, 2)
  assert outputs['backbone.c1.b0'].shape == (1, 4, 64, 64) and outputs['backbone.c4'].shape == (2, 4, 8, 8)
  assert outputs['decoder.projecter_3.bone_dist_right'].shape == (2, 32 * 32, 20)
  np.testing.assert_array_equal(
      outputs['decoder.projecter_4.bone_mask_left'], outputs['decoder.projecter_4.bone_dist_left'] < 1
  )
  assert outputs['decoder.projecter_4.bone_mask_left'].dtype == np.uint8
  assert outputs['decoder.projecter_4.bone_mask_left'].any()
  # Shared modules: one entry per call, left hand first.
  assert not np.array_equal(
      outputs['decoder.projecter_3.global_pos_emb.call0'], outputs['decoder.projecter_3.global_pos_emb.call1']
  )
  inputs = np.load(os.path.join(out, 'inputs.npz'))
  assert inputs['img'].shape == (2, 3, 256, 256) and inputs['img_rgb_u8'].dtype == np.uint8
  np.testing.assert_array_equal(inputs['img_rgb_u8'][1], np.asarray(Image.open(images[1])))
  with open(os.path.join(out, 'index.json')) as f:
    index = json.load(f)
  assert index['eval_outputs.npz']['seg'] == {'shape': [2, 3, 32, 32], 'dtype': 'float32'}
  assert index['inputs.npz'] == fixture_index['inputs.npz']
  with open(os.path.join(out, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['torch_version'] == torch.__version__
  assert summary['checkpoint'] == os.path.abspath(checkpoint)
  assert summary['checkpoint_keys'] == summary['model_keys'] == len(state)
  assert summary['kept_as_built'] == 0 and summary['mano_buffers_max_abs_diff_vs_mano_dir'] == 0
  assert summary['eval_output_arrays'] == len(outputs.files)
  assert set(summary['bone_mask_min_abs_distance_minus_threshold']) == {
      f'projecter_{s}.{h}' for s in (4, 3) for h in ('left', 'right')
  }


def _run(setup, tmp_path, checkpoint_obj, name):
  reference, mano, images, _, _ = setup
  path = str(tmp_path / f'{name}.pth')
  torch.save(checkpoint_obj, path)
  summary = dump_mod.dump(reference, path, mano, images, str(tmp_path / name))
  return summary, dict(np.load(str(tmp_path / name / 'eval_outputs.npz')))


def test_checkpoint_variants(setup, tmp_path):
  _, _, _, _, state = setup
  _, wrapped = _run(setup, tmp_path, {'net': state}, 'wrapped')
  # A DataParallel checkpoint, bare, without the constants the constructor rebuilds.
  constants = ('num_batches_tracked', 'img_gird', 'mano_layer_', 'seg_loss.weight')
  bare = {'module.' + k: v for k, v in state.items() if not any(c in k for c in constants)}
  summary, stripped = _run(setup, tmp_path, bare, 'bare')
  assert summary['kept_as_built'] == len(state) - len(bare) > 0
  assert summary['mano_buffers_max_abs_diff_vs_mano_dir'] is None
  # Each run builds a fresh, randomly initialised model: equal outputs mean the weights were loaded.
  assert wrapped.keys() == stripped.keys()
  for k in wrapped:
    np.testing.assert_array_equal(wrapped[k], stripped[k], err_msg=k)


@pytest.mark.parametrize(
    'change, message',
    [
        (
            lambda s: {k: v for k, v in s.items() if k != 'decoder.projecter_3.gcn_left.weight'},
            r'1 missing learned keys \[.decoder\.projecter_3\.gcn_left\.weight.\]',
        ),
        (lambda s: {**s, 'decoder.extra.weight': torch.zeros(2)}, r"1 unexpected keys \['decoder\.extra\.weight'\]"),
    ],
)
def test_checkpoint_must_fit(setup, tmp_path, change, message):
  with pytest.raises(ValueError, match=message):
    _run(setup, tmp_path, {'net': change(setup[4])}, 'bad')


def test_normalise_reproduces_fixture_input(fixture_dir):
  inputs = np.load(os.path.join(fixture_dir, 'inputs.npz'))
  np.testing.assert_array_equal(dump_mod.normalise(inputs['img_rgb_u8']), inputs['img'])


def test_resize_is_bilinear_half_pixel_without_antialias():
  """The same rule as F.interpolate(bilinear, align_corners=False) (and cv2.INTER_LINEAR), up and down."""
  x = np.random.default_rng(1).uniform(0, 255, (37, 300, 3))
  for size in (256, 20):
    ours = dump_mod._resize_axis(dump_mod._resize_axis(x, size, 0), size, 1)  # pylint: disable=protected-access
    ref = (
        F.interpolate(
            torch.from_numpy(x).permute(2, 0, 1)[None],
            (size, size),
            mode='bilinear',
            align_corners=False,
            antialias=False,
        )[0]
        .permute(1, 2, 0)
        .numpy()
    )
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_load_image_crops_and_resizes(tmp_path):
  rng = np.random.default_rng(2)
  wide = rng.integers(0, 256, (256, 300, 3), dtype=np.uint8)  # centre square needs no resize
  Image.fromarray(wide).save(tmp_path / 'wide.png')
  crop, info = dump_mod.load_image(str(tmp_path / 'wide.png'))
  np.testing.assert_array_equal(crop, wide[:, 22:278])
  assert info['crop_left_top_side'] == [22, 0, 256] and not info['resized']
  big = rng.integers(0, 256, (600, 512), dtype=np.uint8)  # grey, tall, resized 512 -> 256
  Image.fromarray(big).save(tmp_path / 'big.png')
  crop, info = dump_mod.load_image(str(tmp_path / 'big.png'))
  assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8 and info['resized']
  assert info['crop_left_top_side'] == [0, 44, 512]
  # Halving with half-pixel centres averages 2x2 blocks.
  block_mean = big[44:556].reshape(256, 2, 256, 2).mean((1, 3))
  assert np.max(np.abs(crop[..., 0] - block_mean)) <= 0.5
  assert (crop[..., 0] == crop[..., 2]).all()


def test_reference_without_models_dir(tmp_path, capsys):
  with pytest.raises(dump_mod.ReferenceCodeError, match=r'has no models/dir\.py'):
    dump_mod.import_reference(str(tmp_path))
  assert (
      dump_mod.main(
          [
              'dump',
              '--reference_code',
              str(tmp_path),
              '--torch_checkpoint',
              'x.pth',
              '--mano_dir',
              str(tmp_path),
              '--images',
              'x.png',
              '--out',
              str(tmp_path / 'out'),
          ]
      )
      == 2
  )
  assert 'error:' in capsys.readouterr().err


def test_missing_module_is_named(tmp_path):
  reference = write_reference(tmp_path / 'ref', extra_import='import pytorch3d_stand_in_missing')
  dump_mod.install_stand_ins()
  with pytest.raises(dump_mod.ReferenceCodeError, match="imports 'pytorch3d_stand_in_missing', which is not installed"):
    dump_mod.import_reference(reference)


def test_chumpy_stand_in_reads_pickled_ch_objects():
  """Official MANO pickles hold chumpy.ch.Ch objects whose state keeps the value under 'x'."""
  dump_mod.install_stand_ins()
  ch = sys.modules['chumpy']
  if getattr(ch, '__file__', None):
    pytest.skip('chumpy is installed: the stand-in is not used')
  value = np.arange(6.0).reshape(2, 3)
  obj = ch.Ch.__new__(ch.Ch)
  obj.__dict__.update({'x': value, '_dirty_vars': set()})
  restored = pickle.loads(pickle.dumps(obj, protocol=2))
  wrapped = ch.array(restored)
  np.testing.assert_array_equal(wrapped.r, value)
  assert hasattr(wrapped, 'dterms') and ch.vstack([wrapped, wrapped]).r.shape == (4, 3)


def test_runs_without_jax(setup, tmp_path):
  """The script must run where only torch is installed: no jax or flax module gets imported."""
  reference, mano, images, checkpoint, _ = setup
  code = textwrap.dedent(f"""
      import sys
      from tools import dump_torch_reference
      rc = dump_torch_reference.main(['dump', '--reference_code', {reference!r}, '--torch_checkpoint', {checkpoint!r},
                                      '--mano_dir', {mano!r}, '--images', {','.join(images)!r},
                                      '--out', {str(tmp_path / 'sub')!r}, '--train_steps', '1'])
      print('rc', rc, 'jax modules', sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))
  """)
  result = subprocess.run(
      [sys.executable, '-c', code],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ, 'PYTHONPATH': REPO_ROOT},
      check=False,
  )
  assert 'rc 0 jax modules []' in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# --train_steps


def test_training_steps_write_the_fixture_layout(setup, tmp_path, fixture_dir):
  reference, mano, images, checkpoint, state = setup
  out = str(tmp_path / 'out')
  assert (
      dump_mod.main(
          [
              'dump',
              '--reference_code',
              reference,
              '--torch_checkpoint',
              checkpoint,
              '--mano_dir',
              mano,
              '--images',
              ','.join(images),
              '--out',
              out,
              '--train_steps',
              '2',
              '--thread_spread',
          ]
      )
      == 0
  )
  assert sorted(os.listdir(out)) == [
      'eval_outputs.npz',
      'index.json',
      'inputs.npz',
      'state_dict_shapes.json',
      'summary.json',
      'train.npz',
      'train_grad_norms.json',
      'train_losses.json',
      'train_steps.json',
      'train_steps.npz',
  ]
  steps = np.load(os.path.join(out, 'train_steps.npz'))
  # The shared fixture's keys, in its order, for the steps taken (its full final arrays are not written).
  expected = [
      k for k in np.load(os.path.join(fixture_dir, 'train_steps.npz')).files if not k.startswith(('final.', 'step3.'))
  ]
  assert steps.files == expected
  with open(os.path.join(out, 'train_steps.json')) as f:
    info = json.load(f)
  params = [n for n, _ in dump_mod.build_model(dump_mod.import_reference(reference), mano).named_parameters()]
  assert list(steps['param_names']) == params and list(steps['state_names']) == list(state)
  n_terms = 2 + 3 * 5  # seg, dense; per stage two uv, two xyz terms and the offset
  assert steps['losses'].shape == (2, n_terms) and list(steps['loss_names'])[:3] == ['seg', 'dense', 'joint_left_uv_0']
  np.testing.assert_allclose(steps['loss_total'], steps['losses'].sum(1), rtol=1e-6)
  np.testing.assert_array_equal(steps['lr'], [5e-4, 5e-4])
  # No gradient: never called; zero by construction: an exactly zero gradient, and biases feeding a BatchNorm.
  assert info['no_grad'] == ['backbone.fc.weight', 'backbone.fc.bias']
  assert sorted(info['zero_by_construction']) == sorted(
      ['decoder.seg.0.bias']
      + [f'decoder.projecter_{s}.{m}' for s in (4, 3) for m in ('pos_emb_left.0.bias', 'pos_emb_right.0.bias', 'e_0')]
  )
  no_grad = [params.index(n) for n in info['no_grad']]
  assert (
      np.isnan(steps['grad_norm'][:, no_grad]).all() and not np.isnan(np.delete(steps['grad_norm'], no_grad, 1)).any()
  )
  np.testing.assert_array_equal(steps['update_norm'][:, no_grad], 0)
  # AdamW with decoupled decay on every tensor: a zero gradient leaves only the decay, (1 - lr * wd) per step.
  for s in (4, 3):
    name = f'decoder.projecter_{s}.e_0'
    start = state[name].double().sum().item()
    assert info['final_checksums'][name]['sum'] == pytest.approx(start * (1 - 5e-4 * 0.01) ** 2, rel=1e-7)
  # Elsewhere the first step moves each value with a gradient by lr (plus the decay): at most lr * sqrt(n)
  # in norm (fewer where part of a tensor gets no gradient, as the unused rows of the stand-in's heads).
  sizes = np.array([state[n].numel() for n in params])
  moving = [i for i, n in enumerate(params) if n not in info['no_grad'] + info['zero_by_construction']]
  assert (steps['update_norm'][0, moving] > 0.4 * 5e-4 * np.sqrt(sizes[moving])).all()
  assert (steps['update_norm'][0, moving] < 1.01 * 5e-4 * np.sqrt(sizes[moving])).all()
  assert [t['step'] for t in info['thread_spread']['steps']] == [1, 2]
  assert info['thread_spread']['steps'][0]['total_rel_diff'] < 1e-5
  train = np.load(os.path.join(out, 'train.npz'))
  assert train['gt.seg'].shape == (2, 1, 256, 256) and train['gt.seg_down'].shape == (2, 32, 32)
  assert train['train.decoder.projecter_3.bone_dist_left'].shape == (2, 32 * 32, 20)
  assert 'train.after_step.decoder.seg.1.running_var' in train.files
  with open(os.path.join(out, 'train_losses.json')) as f:
    first = json.load(f)
  assert first['__order__'] == list(steps['loss_names']) and first['__total__'] == steps['loss_total'][0]
  with open(os.path.join(out, 'summary.json')) as f:
    assert json.load(f)['training']['train_steps'] == 2


def test_training_steps_are_read_by_compare_training(setup, tmp_path):
  from dir_jax.convert import compare_training  # pylint: disable=import-outside-toplevel  # jax only here

  reference, mano, images, checkpoint, _ = setup
  out = str(tmp_path / 'out')
  dump_mod.dump(reference, checkpoint, mano, images, out, training={'n_steps': 1})
  fixture = compare_training.read_fixture(out)
  assert fixture.n_steps == 1 and 'thread_spread' not in fixture.info
  assert fixture.targets['seg'].shape == (2, 256, 256) and fixture.targets['dense'].shape == (2, 256, 256, 3)
  assert fixture.shapes['decoder.projecter_4.e_0'] == (1,)
  assert set(fixture.single_grad_norms['__no_grad__']) == set(fixture.info['no_grad'])


def _fixture_templates(fixture_dir):
  templates = {}
  for hand in ('left', 'right'):
    with open(os.path.join(fixture_dir, 'mano', f'MANO_{hand.upper()}.pkl'), 'rb') as f:
      templates[hand] = np.asarray(pickle.load(f, encoding='latin1')['v_template'])
  return templates


def test_targets_reproduce_the_fixture(fixture_dir):
  """Projection, normalisation, centre and the painted seg/dense maps against the fixture's train.npz."""
  from tools import dump_torch_training  # pylint: disable=import-outside-toplevel

  train = np.load(os.path.join(fixture_dir, 'train.npz'))
  gt = dump_torch_training.targets_from_geometry(
      {h: train[f'gt.joint_3d_{h}'] for h in ('left', 'right')},
      {h: train[f'gt.mesh_3d_{h}'] for h in ('left', 'right')},
      _fixture_templates(fixture_dir),
  )
  for key, value in gt.items():
    assert value.dtype == train[key].dtype and value.shape == train[key].shape, key
    atol = 1e-4 if '_uv_px_' in key else 1e-6  # the fixture projected its float64 points
    np.testing.assert_allclose(value, train[key], rtol=0, atol=atol, err_msg=key)
  np.testing.assert_array_equal(gt['gt.seg'], train['gt.seg'])
  down = dump_torch_training.loss_resolution_targets(gt, 32)
  np.testing.assert_array_equal(down['gt.seg_down'], train['gt.seg_down'])
  np.testing.assert_allclose(down['gt.dense_down'], train['gt.dense_down'], atol=1e-6)


def test_synthetic_targets_draw_as_the_fixture(fixture_dir):
  """The random draws (order, distributions, 6D layout) and the root placement of the fixture's targets;
  the MANO layer is replaced by one that returns the fixture's own wrist-centred hands."""
  from tools import dump_torch_training  # pylint: disable=import-outside-toplevel

  train = np.load(os.path.join(fixture_dir, 'train.npz'))
  seen = {}

  def layer(hand):
    def call(pose, betas):
      seen[hand] = (pose.numpy(), betas.numpy())
      root = train[f'gt.root_{hand}'][:, None]
      return (
          torch.from_numpy(train[f'gt.mesh_3d_{hand}'] - root),
          torch.from_numpy(train[f'gt.joint_3d_{hand}'] - root),
      )

    return call

  gt = dump_torch_training.synthetic_targets(
      {h: layer(h) for h in ('left', 'right')}, _fixture_templates(fixture_dir), batch=2, seed=0
  )
  for hand in ('left', 'right'):
    np.testing.assert_allclose(seen[hand][0], train[f'gt.mano_pose_{hand}'], rtol=0, atol=1e-7)
    np.testing.assert_allclose(seen[hand][1], train[f'gt.mano_beta_{hand}'], rtol=0, atol=1e-7)
    np.testing.assert_allclose(gt[f'gt.root_{hand}'], train[f'gt.root_{hand}'], rtol=0, atol=1e-7)
    np.testing.assert_allclose(gt[f'gt.mesh_3d_{hand}'], train[f'gt.mesh_3d_{hand}'], rtol=0, atol=1e-6)
  assert (gt['gt.seg'] != train['gt.seg']).mean() < 1e-3  # floor() of pixel positions moved by rounding only


def test_targets_file_is_checked(setup, tmp_path, fixture_dir):
  from tools import dump_torch_training  # pylint: disable=import-outside-toplevel

  train = dict(np.load(os.path.join(fixture_dir, 'train.npz')))
  path = str(tmp_path / 'targets.npz')
  np.savez(path, **{k: v for k, v in train.items() if k != 'gt.center_left'})
  with pytest.raises(ValueError, match=r"lacks \['gt.center_left'\]"):
    dump_torch_training.read_targets(path, 2)
  np.savez(path, **train)
  assert dump_torch_training.read_targets(path, 2)['gt.seg'].shape == (2, 1, 256, 256)
  with pytest.raises(ValueError, match=r'do not fit 3 images'):
    dump_torch_training.read_targets(path, 3)
  reference, mano, images, checkpoint, _ = setup
  out = str(tmp_path / 'given')
  assert (
      dump_mod.main(
          [
              'dump',
              '--reference_code',
              reference,
              '--torch_checkpoint',
              checkpoint,
              '--mano_dir',
              mano,
              '--images',
              ','.join(images),
              '--out',
              out,
              '--train_steps',
              '1',
              '--targets',
              path,
          ]
      )
      == 0
  )
  np.testing.assert_array_equal(np.load(os.path.join(out, 'train.npz'))['gt.dense'], train['gt.dense'])
  with pytest.raises(SystemExit):
    dump_mod.main(
        [
            'dump',
            '--reference_code',
            reference,
            '--torch_checkpoint',
            checkpoint,
            '--mano_dir',
            mano,
            '--images',
            ','.join(images),
            '--out',
            out,
            '--targets',
            path,
        ]
    )
