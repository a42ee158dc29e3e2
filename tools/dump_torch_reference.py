"""Runs the authors' PyTorch DIR on images and writes its outputs in the reference-fixture layout.

  python -m tools.dump_torch_reference --reference_code PATH --torch_checkpoint X.pth \
      --mano_dir M --images IMG[,IMG...] --out OUT [--train_steps N]

PATH is a checkout of https://github.com/PengfeiRen96/DIR (put on sys.path, together with
PATH/manopth for its vendored MANO layer). The model is `models.dir.DIR(21, M, root_joint=0)`, whose
MANO layers read `M/MANO_RIGHT.pkl` and `M/MANO_LEFT.pkl`. All images run as one batch. Written to
OUT (shared/fixtures/dir_reference/README.md gives every array's meaning):

  inputs.npz        img (B,3,256,256) float32, the network input; img_rgb_u8 (B,256,256,3) uint8
  eval_outputs.npz  stage outputs and intermediate features of the eval-mode forward: the fixture's
                    keys, layouts and order (those the model exposes)
  index.json        name -> shape, dtype of every array
  summary.json      versions, paths, checkpoint key counts, preprocessing, bone-mask margins

With `--train_steps N` (and `--targets`, `--target_seed`, `--lr`, `--thread_spread`) it then runs N of
the authors' training iterations on the same images and writes the fixture's training files
(train.npz, train_losses.json, train_grad_norms.json, train_steps.npz/.json, state_dict_shapes.json;
see `dump_torch_training`).

`python -m dir_jax.convert.compare_reference --fixture OUT --torch_checkpoint X.pth --mano_dir M` then
compares the Flax port loaded from the same checkpoint against these outputs (and the steps).

Dependencies: torch, numpy, pillow, absl-py (the flags); no jax (this runs wherever the authors' code does).

Preprocessing (docs/architecture.md#conventions; the authors' eval resizes their 256x256 crops with
cv2 and converts BGR to RGB): an image is read as RGB; a non-square image is centre-cropped to a
square of its shorter side; a square that is not 256x256 is resized to 256x256 by bilinear
interpolation with half-pixel centres and edge clamping, no antialiasing (cv2.INTER_LINEAR's rule,
computed in float64 and rounded to uint8, so `img_rgb_u8` is exactly what the network saw); then
/255 and ImageNet normalisation in float64, cast to float32, NCHW. The network expects a crop in
which the two hands fill about 80 %.

Where this differs from running `DIR.forward`, and why no eval output changes:
- `backbone`, `init_regressor` and `decoder` are called here as `DIR.forward` calls them, because
  that method moves the input to CUDA unconditionally (its remaining work is the training loss);
  `--device` picks the device.
- DIR's constructor downloads torchvision's ImageNet ResNet-50 into the backbone. The download is
  skipped: the checkpoint replaces every backbone weight (the load checks that it covers every
  learned entry). Without CUDA, `.cuda()` is a no-op while the constructor runs (the training-loss
  helpers move their face indices to the GPU there).
- Modules the authors' code imports only for data augmentation, configuration, weight init and the
  MANO pickle loader are replaced by minimal stand-ins when they cannot be imported: cv2, imgaug,
  yacs, timm (DropPath/to_2tuple/trunc_normal_), torchvision (the ResNet-50 download above) and
  chumpy (the loader wraps the MANO arrays in chumpy objects; the network's buffers are their
  values; cv2.Rodrigues only feeds the loader's rest-pose blend shapes, which the layer never reads).
  summary.json lists the stand-ins used. Any other missing module is an error that names it.
"""

import contextlib
import importlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
import types
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from absl import flags
from PIL import Image

from dir_jax import cli  # absl only: no jax

IMG_SIZE = 256
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
JOINT_NUM = 21

# State-dict entries that are constants rebuilt by the constructor (MANO buffers, the projection grid,
# BN counters, the CE class weights; docs/architecture.md#checkpoint-conversion). A checkpoint may omit
# them. Same list as dir_jax.convert.torch_checkpoint.IGNORED_PATTERNS, repeated because that module
# imports jax.
CONSTANT_PATTERNS = (r'\.mano_layer_(left|right)\.', r'\.img_gird$', r'\.num_batches_tracked$', r'^seg_loss\.weight$')

# Hooked submodules: (module path, key prefix in eval_outputs.npz, first batch element only).
# Every call of a module is stored as `<prefix>.call<i>` (shared modules run once per hand: left first).
HOOKS = (
    ('init_regressor.attention_left', 'init.attention_left', False),
    ('init_regressor.attention_right', 'init.attention_right', False),
    ('decoder.skip_layer4', 'decoder.skip_layer4', False),
    ('decoder.fusion_layer4', 'decoder.fusion_layer4', False),
    ('decoder.enhance_layer4', 'decoder.enhance_layer4', False),
    ('decoder.fusion_layer3', 'decoder.fusion_layer3', True),
    ('decoder.enhance_layer3', 'decoder.enhance_layer3', True),
) + tuple(
    (f'decoder.projecter_{s}.{m}', f'decoder.projecter_{s}.{m}', False)
    for s in ('4', '3')
    for m in (
        'img2joint_left',
        'img2joint_right',
        'pos_emb_left',
        'pos_emb_right',
        'gcn_left',
        'gcn_right',
        'global_pos_emb',
        'interaction',
        'proj_feat_emb',
    )
)
PROJECTERS = ('projecter_4', 'projecter_3')
HANDS = ('left', 'right')
STAGE_KEYS = (
    tuple(f'pd_{q}_{h}' for q in ('joint_xyz', 'joint_uv', 'mesh_xyz', 'mesh_uv') for h in HANDS)
    + ('pd_offset',)
    + tuple(f'pd_{q}_{h}' for q in ('proj', 'mano_para', 'mano_pose') for h in HANDS)
)
STAGE_FEATURE_KEYS = ('img_feat', 'joint_feat_left', 'joint_feat_right')


class ReferenceCodeError(RuntimeError):
  """The authors' code cannot be found or imported; the message says what is missing."""


# ---------------------------------------------------------------------------------------------------
# Stand-ins for modules the eval forward does not need.


def _unavailable(module_name: str) -> Callable[[str], Any]:
  def getattr_(name):
    raise AttributeError(
        f'{module_name}.{name} is not available: {module_name.split(".")[0]} is not installed and '
        'dump_torch_reference only stands in for what the eval forward needs'
    )

  return getattr_


def _module(name: str, **attrs) -> types.ModuleType:
  mod = types.ModuleType(name)
  mod.__dict__.update(attrs)
  mod.__getattr__ = _unavailable(name)
  return mod


def _rodrigues(rvec):
  """cv2.Rodrigues for a rotation vector: (3x3 matrix, None)."""
  r = np.asarray(rvec, np.float64).reshape(3)
  theta = np.linalg.norm(r)
  if theta < 1e-12:
    return np.eye(3), None
  k = r / theta
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx, None


def _chumpy_modules() -> dict[str, types.ModuleType]:
  """chumpy as used by the MANO loader: arrays with `.r`, and the Ch objects of the official pickles."""

  class ChArray(np.ndarray):
    """A numpy array that answers chumpy's `.r` (its value) and counts as already wrapped."""

    dterms = ()

    @property
    def r(self):
      return np.asarray(self)

  class Ch:
    """An unpickled chumpy object; its value is the `x` of its pickled state."""

    def __setstate__(self, state):
      self.state = state[0] if isinstance(state, tuple) else state

    def value(self):
      if 'x' not in self.state:
        raise ReferenceCodeError(
            'the MANO pickle holds a chumpy expression without a stored value; install chumpy to load it'
        )
      return np.asarray(self.state['x'])

  Ch.__module__, Ch.__qualname__ = 'chumpy.ch', 'Ch'  # where pickles look it up

  def array(x):
    return np.asarray(x.value() if isinstance(x, Ch) else x).view(ChArray)

  def vstack(xs):
    return np.vstack([np.asarray(x) for x in xs]).view(ChArray)

  def mat_vec_mult(mtx, vec):
    return np.asarray(mtx.dot(np.asarray(vec))).view(ChArray)

  ch = _module('chumpy.ch', Ch=Ch, MatVecMult=mat_vec_mult)
  top = _module('chumpy', Ch=Ch, array=array, vstack=vstack, ch=ch)
  return {'chumpy': top, 'chumpy.ch': ch}


def _stand_in_modules() -> dict[str, Callable[[], dict[str, types.ModuleType]]]:
  """{module the authors' code imports: builder of stand-in modules for its package}."""

  class CfgNode(dict):

    def __init__(self, *args, **kwargs):
      del args, kwargs
      super().__init__()

  class DropPath(torch.nn.Module):
    """Identity: DIR builds its transformer without drop-path, and eval mode disables it anyway."""

    def __init__(self, *args, **kwargs):
      del args, kwargs
      super().__init__()

    def forward(self, x):
      return x

  def resnet50(weights=None):
    del weights
    return torch.nn.Module()

  def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

  def timm_layers():
    layers = _module(
        'timm.models.layers', DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=torch.nn.init.trunc_normal_
    )
    models = _module('timm.models', layers=layers)
    return {'timm': _module('timm', models=models), 'timm.models': models, 'timm.models.layers': layers}

  def torchvision_models():
    models = _module(
        'torchvision.models',
        resnet50=resnet50,
        ResNet50_Weights=types.SimpleNamespace(IMAGENET1K_V1=None, IMAGENET1K_V2=None),
    )
    return {'torchvision': _module('torchvision', models=models), 'torchvision.models': models}

  def imgaug():
    augmenters = _module('imgaug.augmenters')
    return {'imgaug': _module('imgaug', augmenters=augmenters), 'imgaug.augmenters': augmenters}

  def yacs():
    config = _module('yacs.config', CfgNode=CfgNode)
    return {'yacs': _module('yacs', config=config), 'yacs.config': config}

  return {
      'cv2': lambda: {'cv2': _module('cv2', Rodrigues=_rodrigues)},
      'imgaug.augmenters': imgaug,
      'yacs.config': yacs,
      'timm.models.layers': timm_layers,
      'torchvision.models': torchvision_models,
      'chumpy.ch': _chumpy_modules,
  }


def install_stand_ins() -> list[str]:
  """Puts a stand-in into sys.modules for each optional module that fails to import; returns their names."""
  used = []
  for name, build in _stand_in_modules().items():
    try:
      importlib.import_module(name)
    except Exception:  # pylint: disable=broad-except  # a broken install raises more than ImportError
      top = name.split('.')[0]
      for loaded in [m for m in sys.modules if m == top or m.startswith(top + '.')]:
        del sys.modules[loaded]
      sys.modules.update(build())
      used.append(top)
  return used


# ---------------------------------------------------------------------------------------------------
# The authors' model.


def import_reference(reference_code: str):
  """Imports `models.dir` from the authors' checkout at `reference_code`."""
  reference_code = os.path.abspath(reference_code)
  if not os.path.isfile(os.path.join(reference_code, 'models', 'dir.py')):
    raise ReferenceCodeError(
        f'{reference_code} has no models/dir.py: pass the root of a checkout of '
        'https://github.com/PengfeiRen96/DIR as --reference_code'
    )
  for path in (os.path.join(reference_code, 'manopth'), reference_code):
    if path not in sys.path:
      sys.path.insert(0, path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', SyntaxWarning)  # `is` with a literal in their lovasz_loss.py
      module = importlib.import_module('models.dir')
  except ModuleNotFoundError as e:
    raise ReferenceCodeError(
        f"the authors' code at {reference_code} imports '{e.name}', which is not installed "
        f'(and is not one of the modules this script stands in for); install it, see their '
        f'requirements.txt'
    ) from e
  if not os.path.abspath(module.__file__).startswith(reference_code + os.sep):
    raise ReferenceCodeError(
        f'models.dir was imported from {module.__file__}, not from {reference_code}: '
        'another package named "models" shadows the checkout'
    )
  return module


def build_model(dir_module, mano_dir: str):
  """`DIR(21, mano_dir, root_joint=0)` without the ImageNet download (the checkpoint replaces the backbone)."""
  for side in ('RIGHT', 'LEFT'):
    if not os.path.isfile(os.path.join(mano_dir, f'MANO_{side}.pkl')):
      raise FileNotFoundError(f'{mano_dir} has no MANO_{side}.pkl (the MANO model files DIR loads)')
  dir_module.resnet50 = lambda weights=None: torch.nn.Module()
  if torch.cuda.is_available():
    return dir_module.DIR(JOINT_NUM, mano_dir, root_joint=0)
  # The training-loss helpers move their face indices to CUDA in their constructors.
  cuda = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    return dir_module.DIR(JOINT_NUM, mano_dir, root_joint=0)
  finally:
    torch.Tensor.cuda = cuda


def load_checkpoint(path: str) -> dict:
  """{key: tensor} from `{'net': state_dict}` or a bare state dict, `module.` prefix stripped."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint not found: {path}')
  raw = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(raw, Mapping) and isinstance(raw.get('net'), Mapping):
    raw = raw['net']
  if not isinstance(raw, Mapping):
    raise ValueError(f'{path}: expected a state dict or {{"net": state_dict}}, got {type(raw).__name__}')
  return {(k[len('module.') :] if k.startswith('module.') else k): v for k, v in raw.items() if torch.is_tensor(v)}


def load_weights(model, state: Mapping) -> dict[str, Any]:
  """Loads `state` into `model`; every learned entry must be present and no extra one.

  Returns key counts and the largest difference between the checkpoint's MANO buffers and those
  built from the MANO folder (None when the checkpoint has none).
  """
  own = model.state_dict()
  unexpected = sorted(set(state) - set(own))
  missing = sorted(set(own) - set(state))
  missing_learned = [k for k in missing if not any(re.search(p, k) for p in CONSTANT_PATTERNS)]
  if unexpected or missing_learned:
    raise ValueError(
        f'checkpoint does not fit the model: {len(unexpected)} unexpected keys '
        f'{unexpected[:10]}, {len(missing_learned)} missing learned keys {missing_learned[:10]}'
    )
  mano_keys = [k for k in state if '.mano_layer_' in k]
  mano_diff = max((float((state[k].double() - own[k].double()).abs().max()) for k in mano_keys), default=None)
  model.load_state_dict(state, strict=False)
  return {
      'checkpoint_keys': len(state),
      'model_keys': len(own),
      'kept_as_built': len(missing),
      'mano_buffers_max_abs_diff_vs_mano_dir': mano_diff,
  }


# ---------------------------------------------------------------------------------------------------
# Images.


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  """Bilinear resize of one axis, half-pixel centres, source clamped to the edge pixels (no antialias)."""
  n = x.shape[axis]
  src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n - 1)
  w1 = src - i0
  shape = [1] * x.ndim
  shape[axis] = size
  return np.take(x, i0, axis) * (1 - w1).reshape(shape) + np.take(x, i1, axis) * w1.reshape(shape)


def load_image(path: str) -> tuple[np.ndarray, dict]:
  """(256, 256, 3) uint8 RGB network crop and what was done to get it (see the module docstring)."""
  with Image.open(path) as im:
    rgb = np.asarray(im.convert('RGB'))
  h, w = rgb.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = rgb[top : top + side, left : left + side]
  if side != IMG_SIZE:
    resized = _resize_axis(_resize_axis(crop.astype(np.float64), IMG_SIZE, 0), IMG_SIZE, 1)
    crop = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
  info = {
      'path': os.path.abspath(path),
      'width': w,
      'height': h,
      'crop_left_top_side': [left, top, side],
      'resized': side != IMG_SIZE,
  }
  return np.ascontiguousarray(crop), info


def normalise(images_u8: np.ndarray) -> np.ndarray:
  """(B, 256, 256, 3) uint8 RGB -> (B, 3, 256, 256) float32: /255, ImageNet mean/std (float64 math)."""
  x = (images_u8.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
  return np.ascontiguousarray(x.astype(np.float32).transpose(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------
# Forward with hooks.


def _np(t) -> np.ndarray:
  """A numpy copy (a CPU tensor's `.numpy()` shares memory that later steps or in-place ops change)."""
  return t.detach().cpu().numpy().copy()


@contextlib.contextmanager
def recording(model):
  """Records, while active, what the fixture stores of each forward into the dict it yields.

  Hooked submodules (HOOKS) as `<prefix>.call<i>`; each projecter's point-to-bone distances as
  `decoder.<projecter>.bone_dist_<hand>` (B, S*S, 20) and their masks; the init regressor's stage dict
  under `init`, the decoder's output dict under `decoded` (the last forward's).
  """
  modules = dict(model.named_modules())
  recorded: dict[str, Any] = {}
  calls: dict[str, int] = {}

  def record(prefix, value, first_only):
    i = calls[prefix] = calls.get(prefix, -1) + 1
    recorded[f'{prefix}.call{i}' + ('.b0' if first_only else '')] = _np(value[:1] if first_only else value)

  handles = [
      modules[path].register_forward_hook(lambda m, i, o, p=prefix, b=b0: record(p, o, b))
      for path, prefix, b0 in HOOKS
      if path in modules
  ]
  handles.append(model.init_regressor.register_forward_hook(lambda m, i, o: recorded.__setitem__('init', o)))
  handles.append(model.decoder.register_forward_hook(lambda m, i, o: recorded.__setitem__('decoded', o)))
  projecters = {name: modules[f'decoder.{name}'] for name in PROJECTERS if f'decoder.{name}' in modules}
  for name, proj in projecters.items():

    def lineseg_dists(p, a, b, proj=proj, name=name, hands=itertools.cycle(HANDS), original=proj.lineseg_dists):
      """Records the point-to-bone distances of each bone_proj call (left hand, then right)."""
      d = original(p, a, b)
      hand = next(hands)
      dist = _np(d).reshape(-1, proj.feature_size**2, proj.bone_num)
      recorded[f'decoder.{name}.bone_mask_{hand}'] = (dist < proj.distance).astype(np.uint8)
      recorded[f'decoder.{name}.bone_dist_{hand}'] = dist
      return d

    proj.lineseg_dists = lineseg_dists
  try:
    yield recorded
  finally:
    for h in handles:
      h.remove()
    for proj in projecters.values():
      del proj.lineseg_dists


def stage_arrays(init: Mapping, decoded: Mapping, with_features: bool = True) -> dict[str, np.ndarray]:
  """The fixture's `stage{s}.*` (joint features of stages 1, 2 included), `seg` and `dense` arrays; with
  `with_features` also `img_feat`, `proj_feat` and `vis_img_feat`, as the eval dump stores them."""
  out = {}
  for s, stage in enumerate([init] + list(decoded['result_list'])):
    # Stage 2's vis_img_feat is DIR's proj_feat, stored under that name below.
    keys = STAGE_KEYS
    if s:
      keys += STAGE_FEATURE_KEYS if with_features else STAGE_FEATURE_KEYS[1:]
    if with_features and s == 1:
      keys += ('vis_img_feat',)
    for key in keys:
      if stage.get(key) is not None:
        out[f'stage{s}.{key}'] = _np(stage[key])
  for key in ('seg', 'dense') + (('proj_feat',) if with_features else ()):
    if decoded.get(key) is not None:
      out[key] = _np(decoded[key])
  return out


def run_reference(model, img: np.ndarray, device: str = 'cpu') -> dict[str, np.ndarray]:
  """Eval-mode forward of the authors' model on (B, 3, 256, 256) -> {fixture key: array}.

  Stage outputs come first, then the hooked intermediate features in the order they were computed.
  """
  model.eval().to(device)
  with recording(model) as recorded, torch.no_grad():
    feats = model.backbone(torch.from_numpy(img).to(device))
    model.decoder(feats, model.init_regressor(feats[-1]))
  out = stage_arrays(recorded.pop('init'), recorded.pop('decoded'))
  out['backbone.c1.b0'], out['backbone.c2.b0'] = _np(feats[0][:1]), _np(feats[1][:1])
  out['backbone.c3'], out['backbone.c4'] = _np(feats[2]), _np(feats[3])
  return {**out, **recorded}


def bone_mask_margins(outputs: Mapping[str, np.ndarray], model) -> dict[str, float]:
  """Per projecter/hand: smallest |distance - threshold| in cells (a port must not flip a cell)."""
  margins = {}
  for name in PROJECTERS:
    for hand in HANDS:
      key = f'decoder.{name}.bone_dist_{hand}'
      if key in outputs:
        threshold = getattr(model.decoder, name).distance
        margins[f'{name}.{hand}'] = float(np.min(np.abs(outputs[key] - threshold)))
  return margins


def _index(arrays: Mapping[str, np.ndarray]) -> dict:
  return {k: {'shape': list(v.shape), 'dtype': str(v.dtype)} for k, v in arrays.items()}


def _git_commit(path: str) -> str | None:
  try:
    result = subprocess.run(
        ['git', '-C', path, 'rev-parse', 'HEAD'], capture_output=True, text=True, timeout=10, check=False
    )
  except OSError:
    return None
  return result.stdout.strip() or None


def dump(
    reference_code: str,
    checkpoint: str,
    mano_dir: str,
    images: Sequence[str],
    out_dir: str,
    device: str = 'cpu',
    training: Mapping[str, Any] | None = None,
) -> dict:
  """Writes inputs.npz, eval_outputs.npz, index.json and summary.json to `out_dir`; returns the summary.

  With `training` (the keyword arguments of `dump_torch_training.dump_training` but the model and
  images, `n_steps` >= 1), the training files after the eval files.
  """
  start = time.time()
  stand_ins = install_stand_ins()
  dir_module = import_reference(reference_code)
  crops, image_info = zip(*(load_image(p) for p in images))
  img_rgb_u8 = np.stack(crops)
  img = normalise(img_rgb_u8)
  state = load_checkpoint(checkpoint)
  model = build_model(dir_module, mano_dir)
  counts = load_weights(model, state)
  built = time.time()
  outputs = run_reference(model, img, device)
  os.makedirs(out_dir, exist_ok=True)
  inputs = {'img': img, 'img_rgb_u8': img_rgb_u8}
  np.savez_compressed(os.path.join(out_dir, 'inputs.npz'), **inputs)
  np.savez_compressed(os.path.join(out_dir, 'eval_outputs.npz'), **outputs)
  index = {'inputs.npz': _index(inputs), 'eval_outputs.npz': _index(outputs)}
  with open(os.path.join(out_dir, 'index.json'), 'w') as f:
    json.dump(index, f, indent=1)
  summary = {
      'torch_version': torch.__version__,
      'numpy_version': np.__version__,
      'reference_code': os.path.abspath(reference_code),
      'reference_commit': _git_commit(reference_code),
      'checkpoint': os.path.abspath(checkpoint),
      **counts,
      'mano_dir': os.path.abspath(mano_dir),
      'model': f'DIR({JOINT_NUM}, mano_dir, root_joint=0), eval mode',
      'device': device,
      'images': list(image_info),
      'stand_ins': stand_ins,
      'eval_output_arrays': len(outputs),
      'bone_mask_min_abs_distance_minus_threshold': bone_mask_margins(outputs, model),
      'seconds': {'build_and_load': round(built - start, 2), 'eval_forward': round(time.time() - built, 2)},
  }
  if training:
    from tools import dump_torch_training  # pylint: disable=import-outside-toplevel  # it imports this module

    summary['training'] = dump_torch_training.dump_training(model, img, out_dir, device=device, **training)
  with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string(
    'reference_code', None, "root of a checkout of the authors' DIR repository", flag_values=FLAGS, required=True
)
flags.DEFINE_string(
    'torch_checkpoint',
    None,
    "the authors' PyTorch .pth state dict ({'net': ...} or bare)",
    flag_values=FLAGS,
    required=True,
)
flags.DEFINE_string('mano_dir', None, 'folder with MANO_RIGHT.pkl and MANO_LEFT.pkl', flag_values=FLAGS, required=True)
flags.DEFINE_list(
    'images', None, 'RGB images (square 256x256 hand crops), comma-separated', flag_values=FLAGS, required=True
)
flags.DEFINE_string('out', None, 'output folder', flag_values=FLAGS, required=True)
flags.DEFINE_string('device', 'cpu', 'torch device for the forward', flag_values=FLAGS)
flags.DEFINE_integer(
    'train_steps',
    0,
    "also run N of the authors' training iterations (AdamW) on the images and "
    'write the training files (see dump_torch_training); 0: none',
    lower_bound=0,
    flag_values=FLAGS,
)
flags.DEFINE_string(
    'targets',
    None,
    "npz with the training targets in train.npz's gt.* layout; default: synthetic hands as in the shared fixture",
    flag_values=FLAGS,
)
flags.DEFINE_integer('target_seed', 0, 'seed of the synthetic targets', flag_values=FLAGS)
flags.DEFINE_float('lr', 5e-4, "AdamW learning rate (the authors' config)", flag_values=FLAGS)
flags.DEFINE_bool(
    'thread_spread',
    False,
    'rerun the training steps with one thread and record how far the losses move',
    flag_values=FLAGS,
)


@flags.multi_flags_validator(
    ['train_steps', 'targets', 'thread_spread'], '--targets and --thread_spread need --train_steps N', flag_values=FLAGS
)
def _training_flags_need_steps(values: dict[str, Any]) -> bool:
  return bool(values['train_steps']) or not (values['targets'] or values['thread_spread'])


def main(argv: Sequence[str]) -> int:
  """Runs the dump for the command line `argv` (argv[0]: the program); 2 when the inputs are unusable."""
  cli.parse(FLAGS, argv, __doc__)
  training = None
  if FLAGS.train_steps:
    training = {
        'n_steps': FLAGS.train_steps,
        'targets_path': FLAGS.targets,
        'target_seed': FLAGS.target_seed,
        'lr': FLAGS.lr,
        'with_thread_spread': FLAGS.thread_spread,
    }
  try:
    summary = dump(
        FLAGS.reference_code, FLAGS.torch_checkpoint, FLAGS.mano_dir, FLAGS.images, FLAGS.out, FLAGS.device, training
    )
  except (ReferenceCodeError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(
      f'wrote {summary["eval_output_arrays"]} arrays for {len(FLAGS.images)} images to {FLAGS.out} '
      f'({summary["checkpoint_keys"]} checkpoint entries, stand-ins: {", ".join(summary["stand_ins"]) or "none"})'
  )
  if training:
    totals = ', '.join(f'{t:.4f}' for t in summary['training']['loss_total_per_step'])
    print(f'and {FLAGS.train_steps} training steps (loss total per step: {totals})')
  return 0


if __name__ == '__main__':
  cli.run(main)
