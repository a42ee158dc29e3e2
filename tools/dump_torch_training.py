"""A few AdamW steps of the authors' PyTorch DIR on one batch, written in the reference-fixture layout.

`python -m tools.dump_torch_reference ... --train_steps N` runs this after the eval
forward. Each step does what the authors' `train.py` does per iteration: gradients reset to None,
`DIR.forward({'img': x}, targets, meta_info)` in train mode, the plain sum of its loss dict,
backward, `torch.optim.AdamW` step (lr `--lr`, 5e-4 in the released config; PyTorch's defaults
otherwise: betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on every tensor). The cosine schedule
steps once per epoch, so the learning rate is constant over the N steps of one batch. The same batch
is used at every step, without augmentation. `DIR.forward` moves its inputs to CUDA
unconditionally; on a CPU device `Tensor.cuda` is the identity while it runs.

Targets: `--targets NPZ` with train.npz's `gt.*` arrays (below), or, by default, synthetic hands made
like the shared fixture's (`synthetic_targets`): per hand and image a random root rotation, pose and
shape through the model's own stage-0 MANO layer, placed 0.55 m in front of a 500 px pinhole camera,
with segmentation and dense maps painted around the projected vertices.

Written to the output folder, next to the eval dump (shared/fixtures/dir_reference/README.md gives
every key's meaning; `compare_reference --fixture OUT --torch_checkpoint X.pth --mano_dir M` reads them all):

  train.npz              gt.* targets; train.* = step 1's train-mode outputs, bone distances and
                         (train.after_step.*) every BatchNorm running statistic after that forward
  train_losses.json      step 1's loss terms, `__total__`, `__order__`
  train_grad_norms.json  step 1's gradient norm per parameter (null = no gradient),
                         `__zero_by_construction__`, `__no_grad__`
  train_steps.npz/.json  every step's loss terms, learning rate, gradient and update norm per
                         parameter, state-dict sums, outputs and bone distances; final checksums
  state_dict_shapes.json [key, shape, dtype] of every state-dict entry

Zero by construction: parameters whose step-1 gradient is exactly zero (the GCN `e_0`) and biases
whose output feeds a train-mode BatchNorm directly (their true gradient is zero; PyTorch returns
rounding noise, which Adam turns into moves of up to lr). `--thread_spread` reruns the steps with one
thread from the same start and records how far the losses move, which is what later steps of a
float32 port can be expected to match.
"""

import contextlib
import copy
import json
import os
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch

from tools.dump_torch_reference import HANDS, _index, _np, _rodrigues, recording, stage_arrays

IMG_SIZE = 256
FOCAL_PX = 500.0
PRINCIPAL_PX = 128.0
ROOT_M = {'left': (-0.05, 0.0, 0.55), 'right': (0.05, 0.0, 0.55)}
PAINT_RADIUS_PX = 3
TARGET_SEED_STREAM = 1000002  # the fixture's targets come from default_rng([seed, 1000002])
# What DIR.forward reads: target[...] and meta_info[...] (B, 1, 3).
TARGET_KEYS = tuple(f'{k}_{h}' for k in ('joint_2d', 'mesh_2d', 'joint_3d', 'mesh_3d') for h in HANDS)
META_KEYS = tuple(f'center_{h}' for h in HANDS)
SEG_LABEL = {'left': 1, 'right': 2}


# ---------------------------------------------------------------------------------------------------
# Targets.


def project_px(points_m: np.ndarray) -> np.ndarray:
  """(..., 3) camera-frame metres -> (..., 2) pixels of the 256x256 crop (f = 500, c = 128)."""
  return points_m[..., :2] / points_m[..., 2:] * FOCAL_PX + PRINCIPAL_PX


def paint(uv_px: Mapping[str, np.ndarray], templates_m: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Segmentation (B, 1, 256, 256) and dense map (B, 3, 256, 256) as float32.

  Args:
    uv_px: per hand (B, V, 2) projected vertices in pixels.
    templates_m: per hand (V, 3) rest-pose vertices; a vertex's dense colour is its template position
      normalised to [0, 1] per axis.
  Every vertex paints a disk of radius 3 px around floor(uv), in vertex order, the left hand first and
  the right hand over it; seg is 0 background, 1 left, 2 right.
  """
  batch = next(iter(uv_px.values())).shape[0]
  seg = np.zeros((batch, IMG_SIZE, IMG_SIZE), np.float32)
  dense = np.zeros((batch, IMG_SIZE, IMG_SIZE, 3), np.float32)
  dy, dx = np.mgrid[-PAINT_RADIUS_PX : PAINT_RADIUS_PX + 1, -PAINT_RADIUS_PX : PAINT_RADIUS_PX + 1]
  inside = dx**2 + dy**2 <= PAINT_RADIUS_PX**2
  dx, dy = dx[inside], dy[inside]
  for hand in HANDS:
    template = np.asarray(templates_m[hand], np.float64)
    colour = (template - template.min(0)) / (template.max(0) - template.min(0))
    corner = np.floor(uv_px[hand]).astype(np.int64)
    for b in range(batch):
      for v in range(corner.shape[1]):
        x, y = corner[b, v, 0] + dx, corner[b, v, 1] + dy
        on = (x >= 0) & (x < IMG_SIZE) & (y >= 0) & (y < IMG_SIZE)
        seg[b, y[on], x[on]] = SEG_LABEL[hand]
        dense[b, y[on], x[on]] = colour[v]
  return seg[:, None], dense.transpose(0, 3, 1, 2)


def targets_from_geometry(
    joints_m: Mapping[str, np.ndarray], verts_m: Mapping[str, np.ndarray], templates_m: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
  """train.npz's `gt.*` arrays from camera-frame joints (B, 21, 3) and vertices (B, V, 3) per hand.

  Computed in float64 from the given points and stored as float32. `joint_2d`/`mesh_2d` = (u, v
  normalised to [-1, 1], z m); `center` = joint 9 (B, 1, 3), as DIR's loader; seg and dense are
  painted around the stored (float32) pixel positions of the vertices.
  """
  batch = len(joints_m['left'])
  camera = np.array([[FOCAL_PX, 0, PRINCIPAL_PX], [0, FOCAL_PX, PRINCIPAL_PX], [0, 0, 1]], np.float32)
  gt: dict[str, np.ndarray] = {'gt.camera': np.repeat(camera[None], batch, 0)}
  for hand in HANDS:
    for name, points in (('joint', joints_m[hand]), ('mesh', verts_m[hand])):
      points = np.asarray(points, np.float64)
      uv = project_px(points)
      gt[f'gt.{name}_2d_{hand}'] = np.concatenate([uv / IMG_SIZE * 2 - 1, points[..., 2:]], -1).astype(np.float32)
      gt[f'gt.{name}_3d_{hand}'] = points.astype(np.float32)
      gt[f'gt.{name}_uv_px_{hand}'] = uv.astype(np.float32)
    gt[f'gt.center_{hand}'] = gt[f'gt.joint_3d_{hand}'][:, 9:10].copy()
  gt['gt.seg'], gt['gt.dense'] = paint({h: gt[f'gt.mesh_uv_px_{h}'] for h in HANDS}, templates_m)
  return gt


def synthetic_targets(
    mano_layers: Mapping[str, Callable], templates_m: Mapping[str, np.ndarray], batch: int, seed: int
) -> dict[str, np.ndarray]:
  """The shared fixture's synthetic hands for `batch` images (its RECIPE, section 7).

  Args:
    mano_layers: per hand the model's stage-0 MANO layer, `(pose (B, 51) = [6D root, 45 PCA],
      betas (B, 10)) -> (verts (B, 778, 3), joints (B, 21, 3))`, wrist-centred.
    templates_m: per hand the (778, 3) template that colours the dense map.
  Draws from default_rng([seed, 1000002]), per hand (left, then right): axis-angle root rotations
  N(0, 0.4) (B, 3), PCA N(0, 0.5) (B, 45), betas N(0, 0.5) (B, 10), root positions (-+0.05, 0, 0.55) m
  + N(0, 0.01) (B, 3).
  """
  rng = np.random.default_rng([seed, TARGET_SEED_STREAM])
  joints, verts, extra = {}, {}, {}
  for hand in HANDS:
    axis_angle = rng.normal(0, 0.4, (batch, 3))
    pca = rng.normal(0, 0.5, (batch, 45))
    betas = rng.normal(0, 0.5, (batch, 10))
    root = np.asarray(ROOT_M[hand]) + rng.normal(0, 0.01, (batch, 3))
    rotations = [_rodrigues(a)[0] for a in axis_angle]
    six_d = np.stack([np.concatenate([r[:, 0], r[:, 1]]) for r in rotations])
    pose = np.concatenate([six_d, pca], 1).astype(np.float32)
    with torch.no_grad():
      v, j = mano_layers[hand](torch.from_numpy(pose), torch.from_numpy(betas.astype(np.float32)))
    verts[hand] = _np(v).astype(np.float64) + root[:, None]
    joints[hand] = _np(j).astype(np.float64) + root[:, None]
    extra.update(
        {
            f'gt.mano_pose_{hand}': pose,
            f'gt.mano_beta_{hand}': betas.astype(np.float32),
            f'gt.root_{hand}': root.astype(np.float32),
        }
    )
  return {**targets_from_geometry(joints, verts, templates_m), **extra}


def read_targets(path: str, batch: int) -> dict[str, np.ndarray]:
  """`gt.*` arrays of an npz in train.npz's layout, checked against the batch size."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'targets file not found: {path}')
  with np.load(path) as data:
    gt = {k: data[k] for k in data.files if k.startswith('gt.')}
  shapes = {
      **{f'gt.{k}': (21 if k.startswith('joint') else 778, 3) for k in TARGET_KEYS},
      **{f'gt.{k}': (1, 3) for k in META_KEYS},
      'gt.seg': (1, IMG_SIZE, IMG_SIZE),
      'gt.dense': (3, IMG_SIZE, IMG_SIZE),
  }
  missing = [k for k in shapes if k not in gt]
  if missing:
    raise ValueError(
        f'{path} lacks {missing}: --targets needs gt.joint_2d/mesh_2d/joint_3d/mesh_3d/center_{{left,right}}, '
        "gt.seg and gt.dense in the layout of the shared fixture's train.npz (README there)"
    )
  wrong = {k: gt[k].shape for k, s in shapes.items() if gt[k].shape != (batch, *s)}
  if wrong:
    raise ValueError(
        f'{path}: shapes {wrong} do not fit {batch} images (expected (B, ...) = '
        f'{ {k: (batch, *shapes[k]) for k in wrong} })'
    )
  return {k: v.astype(np.float32) for k, v in gt.items()}


def loss_resolution_targets(targets: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """`gt.seg_down` (B, size, size) int64 and `gt.dense_down` (B, 3, size, size): what DIR's loss compares
  the heads with (nearest and bilinear resizing, as its forward does them)."""
  seg = torch.nn.functional.interpolate(torch.from_numpy(targets['gt.seg']), (size, size), mode='nearest')
  dense = torch.nn.functional.interpolate(torch.from_numpy(targets['gt.dense']), (size, size), mode='bilinear')
  return {'gt.seg_down': _np(seg.long().squeeze(1)), 'gt.dense_down': _np(dense)}


# ---------------------------------------------------------------------------------------------------
# Steps.


@contextlib.contextmanager
def cuda_as_identity(device: str):
  """`Tensor.cuda` returns the tensor itself while active, unless `device` is a CUDA device."""
  if torch.device(device).type == 'cuda':
    yield
    return
  original = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    yield
  finally:
    torch.Tensor.cuda = original


@contextlib.contextmanager
def biases_feeding_batchnorm(model, found: set):
  """Adds to `found`, during one forward, every `<module>.bias` whose output a BatchNorm reads directly.

  An output is matched to a BatchNorm's input by storage (views and transposes share it); outputs are
  held until the context ends, so no storage is reused within the forward.
  """
  outputs: dict[int, tuple[str, torch.Tensor]] = {}
  handles = []
  for name, module in model.named_modules():
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access

      def pre_hook(m, args):
        if m.training and args and torch.is_tensor(args[0]) and args[0].untyped_storage().data_ptr() in outputs:
          found.add(outputs[args[0].untyped_storage().data_ptr()][0] + '.bias')

      handles.append(module.register_forward_pre_hook(pre_hook))
    elif isinstance(getattr(module, 'bias', None), torch.nn.Parameter):

      def hook(m, args, out, name=name):
        if torch.is_tensor(out):
          outputs[out.untyped_storage().data_ptr()] = (name, out)

      handles.append(module.register_forward_hook(hook))
  try:
    yield
  finally:
    for h in handles:
      h.remove()
    outputs.clear()


def _checksum(t: torch.Tensor) -> dict:
  x = _np(t).astype(np.float64).ravel()
  return {'sum': float(x.sum()), 'sum_sq': float((x**2).sum()), 'first': x[:3].tolist()}


def _norm(t: torch.Tensor) -> float:
  return float(torch.linalg.vector_norm(t.detach().double()))


def _margins(recorded: Mapping, model) -> dict:
  """Per projecter/hand: smallest |distance - threshold| and counts within 1e-3 / 1e-4 cells."""
  out = {}
  for key, dist in recorded.items():
    if '.bone_dist_' in key:
      name, hand = key.split('.')[1], key.rsplit('_', 1)[1]
      gap = np.abs(dist - getattr(model.decoder, name).distance)
      out[f'{name}.{hand}'] = {
          'min_abs_distance_minus_threshold': float(gap.min()),
          'n_within_1e-3_of_threshold': int((gap < 1e-3).sum()),
          'n_within_1e-4_of_threshold': int((gap < 1e-4).sum()),
      }
  return out


def run_steps(
    model, img: np.ndarray, targets: Mapping[str, np.ndarray], n_steps: int, lr: float, device: str = 'cpu'
) -> dict[str, Any]:
  """`n_steps` of the authors' training iteration on one batch; what each step did, on the host.

  Returns {'losses': [{term: value}], 'totals', 'lr', 'grad_norm' / 'update_norm': (n, P) float64
  (NaN = no gradient), 'state_sum' / 'state_sum_sq': (n, E), 'arrays': {'step{s}.*': array},
  'train_npz': step 1's `train.*` arrays, 'no_grad', 'zero_by_construction', 'optimizer'}.
  """
  model.train().to(device)
  params = dict(model.named_parameters())
  optimizer = torch.optim.AdamW([{'params': list(params.values()), 'initial_lr': lr}], lr)
  inputs = {'img': torch.from_numpy(img).to(device)}
  target = {k: torch.from_numpy(targets[f'gt.{k}']).to(device) for k in TARGET_KEYS + ('seg', 'dense')}
  meta_info = {k: torch.from_numpy(targets[f'gt.{k}']).to(device) for k in META_KEYS}
  out: dict[str, Any] = {
      'losses': [],
      'totals': [],
      'lr': [],
      'grad_norm': [],
      'update_norm': [],
      'state_sum': [],
      'state_sum_sq': [],
      'arrays': {},
      'margins': [],
  }
  feeding_bn: set = set()
  for s in range(1, n_steps + 1):
    optimizer.zero_grad(set_to_none=True)
    with (
        cuda_as_identity(device),
        recording(model) as recorded,
        biases_feeding_batchnorm(model, feeding_bn) if s == 1 else contextlib.nullcontext(),
    ):
      _, loss = model(inputs, target, meta_info)
    total = sum(loss[k] for k in loss)  # as train.py: a plain sum in dict order
    total.backward()
    before = {n: p.detach().clone() for n, p in params.items()}
    out['lr'].append(float(optimizer.param_groups[0]['lr']))
    out['grad_norm'].append([np.nan if p.grad is None else _norm(p.grad) for p in params.values()])
    if s == 1:
      out['no_grad'] = [n for n, p in params.items() if p.grad is None]
      exact_zero = {n for n, p in params.items() if p.grad is not None and not torch.any(p.grad)}
      out['zero_by_construction'] = [n for n in params if n in exact_zero or n in feeding_bn]
      train_npz = {f'train.{k}': v for k, v in stage_arrays(recorded['init'], recorded['decoded'], False).items()}
      train_npz.update({f'train.{k}': v for k, v in recorded.items() if '.bone_dist_' in k})
      train_npz.update(
          {
              f'train.after_step.{k}': _np(v)
              for k, v in model.state_dict().items()
              if k.endswith(('running_mean', 'running_var'))
          }
      )
      out['train_npz'] = train_npz
    optimizer.step()
    out['update_norm'].append([_norm(p.detach().double() - before[n].double()) for n, p in params.items()])
    state = model.state_dict()
    checks = [_checksum(t) for t in state.values()]
    out['state_sum'].append([c['sum'] for c in checks])
    out['state_sum_sq'].append([c['sum_sq'] for c in checks])
    out['losses'].append({k: float(v.detach()) for k, v in loss.items()})
    out['totals'].append(float(total.detach()))
    out['margins'].append(_margins(recorded, model))
    arrays = {k: v for k, v in recorded.items() if '.bone_dist_' in k}
    arrays.update(stage_arrays(recorded['init'], recorded['decoded'], with_features=False))
    out['arrays'].update({f'step{s}.{k}': v for k, v in arrays.items()})
  group = {k: v for k, v in optimizer.param_groups[0].items() if k != 'params'}
  out['optimizer'] = {
      **{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()},
      'class': type(optimizer).__name__,
      'n_param_groups': len(optimizer.param_groups),
      'n_params': len(params),
      'n_elements': int(sum(p.numel() for p in params.values())),
  }
  out['final_checksums'] = dict(zip(state, checks))  # the state after the last step, summed there
  return out


def thread_spread(
    model, start_state: Mapping, img, targets, n_steps: int, lr: float, device: str, reference: Mapping
) -> dict:
  """The same steps from the same start with one thread: how far each step's losses move."""
  model.load_state_dict(start_state)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    rerun = run_steps(model, img, targets, n_steps, lr, device)
  finally:
    torch.set_num_threads(threads)
  steps = []
  for s in range(n_steps):
    rel = {k: abs(rerun['losses'][s][k] - v) / max(abs(v), 1e-12) for k, v in reference['losses'][s].items()}
    steps.append(
        {
            'step': s + 1,
            'total_rel_diff': abs(rerun['totals'][s] - reference['totals'][s])
            / max(abs(reference['totals'][s]), 1e-12),
            'loss_terms_rel_diff': rel,
            'loss_terms_max_rel_diff': max(rel.values()),
        }
    )
  return {'threads': [threads, 1], 'steps': steps}


def dump_training(
    model,
    img: np.ndarray,
    out_dir: str,
    n_steps: int,
    targets_path: str | None = None,
    target_seed: int = 0,
    lr: float = 5e-4,
    device: str = 'cpu',
    with_thread_spread: bool = False,
) -> dict:
  """Writes the training files (module docstring) for `model` (weights loaded) on `img`; returns their summary."""
  if n_steps < 1:
    raise ValueError(f'--train_steps must be at least 1, got {n_steps}')
  start = time.time()
  batch = img.shape[0]
  if targets_path:
    targets = read_targets(targets_path, batch)
  else:
    layers = {h: getattr(model.init_regressor, f'mano_layer_{h}') for h in HANDS}
    templates = {h: _np(layers[h].th_v_template).reshape(-1, 3) for h in HANDS}
    targets = synthetic_targets(layers, templates, batch, target_seed)
  start_state = copy.deepcopy(model.state_dict()) if with_thread_spread else None
  steps = run_steps(model, img, targets, n_steps, lr, device)
  param_names = list(dict(model.named_parameters()))
  state_names = list(model.state_dict())
  loss_names = list(steps['losses'][0])
  arrays = {
      **steps['arrays'],
      'loss_names': np.array(loss_names),
      'losses': np.array([[l[k] for k in loss_names] for l in steps['losses']]),
      'loss_total': np.array(steps['totals']),
      'lr': np.array(steps['lr']),
      'param_names': np.array(param_names),
      'grad_norm': np.array(steps['grad_norm']),
      'update_norm': np.array(steps['update_norm']),
      'state_names': np.array(state_names),
      'state_sum': np.array(steps['state_sum']),
      'state_sum_sq': np.array(steps['state_sum_sq']),
  }
  os.makedirs(out_dir, exist_ok=True)
  train_npz = {
      **targets,
      **loss_resolution_targets(targets, steps['train_npz']['train.seg'].shape[-1]),
      **steps['train_npz'],
  }
  np.savez_compressed(os.path.join(out_dir, 'train.npz'), **train_npz)
  np.savez_compressed(os.path.join(out_dir, 'train_steps.npz'), **arrays)
  first = steps['losses'][0]
  _write_json(out_dir, 'train_losses.json', {**first, '__total__': steps['totals'][0], '__order__': loss_names})
  norms = {n: (None if np.isnan(g) else g) for n, g in zip(param_names, steps['grad_norm'][0])}
  _write_json(
      out_dir,
      'train_grad_norms.json',
      {**norms, '__zero_by_construction__': steps['zero_by_construction'], '__no_grad__': steps['no_grad']},
  )
  _write_json(
      out_dir,
      'state_dict_shapes.json',
      [[k, list(v.shape), str(v.dtype).replace('torch.', '')] for k, v in model.state_dict().items()],
  )
  info = {
      'seed': None if targets_path else target_seed,
      'targets': os.path.abspath(targets_path) if targets_path else 'synthetic (shared fixture RECIPE section 7)',
      'n_steps': n_steps,
      'torch_version': torch.__version__,
      'numpy_version': np.__version__,
      'torch_threads': torch.get_num_threads(),
      'device': device,
      'optimizer': steps['optimizer'],
      'lr_per_step': steps['lr'],
      'loss_order': loss_names,
      'steps': [
          {
              'step': s + 1,
              'lr': steps['lr'][s],
              'losses': steps['losses'][s],
              'total': steps['totals'][s],
              'bone_mask_margins': steps['margins'][s],
          }
          for s in range(n_steps)
      ],
      'no_grad': steps['no_grad'],
      'zero_by_construction': steps['zero_by_construction'],
      'npz_index': _index(arrays),
  }
  if with_thread_spread:
    info['thread_spread'] = thread_spread(model, start_state, img, targets, n_steps, lr, device, steps)
  info['seconds'] = round(time.time() - start, 2)
  info['grad_norms'] = {
      n: [None if np.isnan(g[i]) else g[i] for g in steps['grad_norm']] for i, n in enumerate(param_names)
  }
  info['update_norms'] = {n: [u[i] for u in steps['update_norm']] for i, n in enumerate(param_names)}
  info['final_checksums'] = steps['final_checksums']
  _write_json(out_dir, 'train_steps.json', info)
  return {
      'train_steps': n_steps,
      'loss_total_per_step': steps['totals'],
      'no_grad': len(steps['no_grad']),
      'zero_by_construction': len(steps['zero_by_construction']),
      'thread_spread': with_thread_spread,
      'seconds': info['seconds'],
  }


def _write_json(out_dir: str, name: str, value) -> None:
  with open(os.path.join(out_dir, name), 'w') as f:
    json.dump(value, f, indent=1)
