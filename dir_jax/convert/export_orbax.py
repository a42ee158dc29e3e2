"""Converts an authors' DIR checkpoint (.pth or .npz) into an orbax checkpoint of this project.

  python -m dir_jax.convert.export_orbax --torch_checkpoint DIR_released.pth --out checkpoints/dir_released

The output is a `dir_jax.checkpoint` directory (variables + model config) that `evaluate.py`,
`python -m dir_jax.predict` and `train.py --config.init_checkpoint=...` restore. The released
configuration (two stages, bone projection) is the default; the authors' checkpoint needs no flags.
"""

from typing import Sequence

import numpy as np
from absl import flags

from dir_jax import checkpoint, cli
from dir_jax.convert.torch_checkpoint import convert_state_dict, load_torch_checkpoint
from dir_jax.model.dir import DIR, abstract_variables


def export(torch_checkpoint: str, out_dir: str, model: DIR | None = None) -> str:
  """Converts `torch_checkpoint` for `model` (default: the released DIR) and saves it to `out_dir`."""
  model = model or DIR()
  state = load_torch_checkpoint(torch_checkpoint)
  variables, report = convert_state_dict(
      state,
      abstract_variables(model),
      model.config.stages,
      transformer_blocks=model.config.transformer_blocks,
      scan_stages=model.config.scan_stages,
  )
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


FLAGS = flags.FlagValues()  # this tool's own flags (dir_jax.cli: tools share flag names)
flags.DEFINE_string(
    'torch_checkpoint',
    None,
    "the authors' PyTorch checkpoint: .pth ({'net': ...} or a state dict) or .npz",
    flag_values=FLAGS,
    required=True,
)
flags.DEFINE_string('out', None, 'output directory (created)', flag_values=FLAGS, required=True)


def main(argv: Sequence[str]) -> int:
  """Converts the checkpoint named on the command line `argv` (argv[0]: the program)."""
  cli.parse(FLAGS, argv, __doc__)
  export(FLAGS.torch_checkpoint, FLAGS.out)
  return 0


if __name__ == '__main__':
  cli.run(main)
