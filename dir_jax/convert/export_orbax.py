"""Converts an authors' DIR checkpoint (.pth or .npz) into an orbax checkpoint of this project.

  python -m dir_jax.convert.export_orbax --checkpoint DIR_released.pth --out checkpoints/dir_released

The output is a `dir_jax.checkpoint` directory (variables + model config) that `evaluate.py`,
`python -m dir_jax.predict` and `train.py --config.init_checkpoint=...` restore. The released
configuration (two stages, bone projection) is the default; the authors' checkpoint needs no flags.
"""

import argparse
import sys

import numpy as np

from dir_jax import checkpoint
from dir_jax.convert.torch_checkpoint import convert_state_dict, load_torch_checkpoint
from dir_jax.model.dir import DIR, abstract_variables


def export(torch_checkpoint: str, out_dir: str, model: DIR | None = None) -> str:
  """Converts `torch_checkpoint` for `model` (default: the released DIR) and saves it to `out_dir`."""
  model = model or DIR()
  state = load_torch_checkpoint(torch_checkpoint)
  variables, report = convert_state_dict(state, abstract_variables(model), model.config.stages,
                                         transformer_blocks=model.config.transformer_blocks, scan_stages=model.config.scan_stages)
  print(f'{torch_checkpoint}: {report.summary()}')
  if report.unused:
    print('unused by this configuration: ' + ', '.join(report.unused[:8]) + (' ...' if len(report.unused) > 8 else ''))
  count = sum(int(np.prod(v.shape)) for v in _leaves(variables['params']))
  path = checkpoint.save_variables(out_dir, variables, model)
  print(f'wrote {count:,} parameters to {path}')
  return path


def _leaves(tree):
  for value in tree.values():
    yield from (_leaves(value) if isinstance(value, dict) else [value])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True, help="the authors' checkpoint: .pth ({'net': ...} or a state dict) or .npz")
  parser.add_argument('--out', required=True, help='output directory (created)')
  args = parser.parse_args(argv)
  export(args.checkpoint, args.out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
