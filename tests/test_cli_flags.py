"""The command-line tools' absl flags (dir_jax.cli): each tool has its own FlagValues, so importing all of them in one
process defines no flag twice; each parses a representative command line and refuses a bad one, naming the flag,
without running its job."""

import importlib
import os
import subprocess
import sys
from unittest import mock

import pytest
from absl import flags

from dir_jax import cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOOLS = (
    'dir_jax.predict',
    'dir_jax.demo',
    'data_prep.synthetic',
    'data_prep.synthetic_mano',
    'dir_jax.convert.compare_reference',
    'dir_jax.convert.export_orbax',
    'tools.dump_torch_reference',
)
BENCHES = (
    'bench.build_interhand',
    'bench.convert_interhand',
    'bench.device_augment',
    'bench.flops',
    'bench.input_pipeline',
    'bench.loop_conv',
    'bench.mano',
    'bench.mesh_volume',
    'bench.model',
    'bench.plan_interhand',
    'bench.train_throughput',
)
NEEDS_TORCH = ('tools.dump_torch_reference',)


@pytest.fixture(scope='module')
def modules():
  """Every tool and benchmark module, imported into this one process (a second definition of a flag name in one
  FlagValues would raise DuplicateFlagError here). Benchmarks that set XLA_FLAGS or sys.path when imported get
  both put back."""
  loaded = {}
  for name in TOOLS + BENCHES:
    if name in NEEDS_TORCH and importlib.util.find_spec('torch') is None:
      continue
    path = list(sys.path)
    with mock.patch.dict(os.environ):
      loaded[name] = importlib.import_module(name)
    sys.path[:] = path
  return loaded


def _module(modules, name):
  if name not in modules:
    pytest.skip(f'{name} needs torch')
  return modules[name]


def test_every_tool_has_its_own_flags(modules):
  for name, module in modules.items():
    assert isinstance(module.FLAGS, flags.FlagValues) and module.FLAGS is not flags.FLAGS, name
  shared = {name for name in modules['dir_jax.predict'].FLAGS} & {name for name in modules['dir_jax.demo'].FLAGS}
  assert 'out' in shared  # the same name in two tools of one process: fine, each FlagValues holds its own


PARSED = [
    (
        'dir_jax.predict',
        [
            '--checkpoint=runs/exp1',
            '--images',
            'photos/*.jpg',
            '--out=preds',
            '--bbox',
            '10,20,110.5,220',
            '--mano_dir=mano',
            '--batch_size=3',
            '--render_size',
            '96',
            '--compilation_cache=',
        ],
        {
            'checkpoint': 'runs/exp1',
            'images': 'photos/*.jpg',
            'bbox': (10.0, 20.0, 110.5, 220.0),
            'mano_dir': 'mano',
            'batch_size': 3,
            'render_size': 96,
            'compilation_cache': '',
        },
    ),
    (
        'dir_jax.predict',
        ['--checkpoint', 'c', '--images', 'i', '--out', 'o'],
        {'bbox': None, 'mano_dir': None, 'batch_size': 8, 'render_size': 256, 'compilation_cache': None},
    ),
    (
        'dir_jax.demo',
        ['--workdir=run', '--eval=eval', '--config=configs/synthetic.py', '--out=demo'],
        {'workdir': 'run', 'eval': 'eval', 'config': 'configs/synthetic.py', 'num_images': 6},
    ),
    (
        'data_prep.synthetic',
        ['--out=raw', '--num_train=768', '--num_test', '48', '--rig=frontal'],
        {
            'out': 'raw',
            'num_train': 768,
            'num_test': 48,
            'num_val': 0,
            'seed': 0,
            'mano_dir': None,
            'rig': 'frontal',
            'scene': 'interacting',
            'hand_separation_cm': None,
            'gloves': None,
        },
    ),
    (
        'data_prep.synthetic',
        [
            '--out=raw',
            '--num_train=8',
            '--num_test=4',
            '--hand_separation_cm=10,16',
            '--gloves',
            '--captures_per_split=8',
        ],
        {'scene': 'interacting', 'hand_separation_cm': ['10', '16'], 'gloves': True, 'captures_per_split': 8},
    ),
    ('data_prep.synthetic_mano', ['--out', 'mano', '--seed=3'], {'out': 'mano', 'seed': 3}),
    (
        'dir_jax.convert.compare_reference',
        ['--fixture=f', '--torch_checkpoint=x.pth', '--mano_dir=m', '--notrain_steps', '--float64'],
        {'fixture': 'f', 'torch_checkpoint': 'x.pth', 'mano_dir': 'm', 'train_steps': False, 'float64': True},
    ),
    (
        'dir_jax.convert.compare_reference',
        ['--fixture=f'],
        {'torch_checkpoint': None, 'train_steps': True, 'float64': False},
    ),
    (
        'dir_jax.convert.export_orbax',
        ['--torch_checkpoint', 'DIR_released.pth', '--out', 'orbax'],
        {'torch_checkpoint': 'DIR_released.pth', 'out': 'orbax'},
    ),
    (
        'tools.dump_torch_reference',
        [
            '--reference_code=DIR',
            '--torch_checkpoint=x.pth',
            '--mano_dir=m',
            '--images=a.png,b.png',
            '--out=dump',
            '--train_steps=3',
            '--thread_spread',
        ],
        {
            'images': ['a.png', 'b.png'],
            'train_steps': 3,
            'thread_spread': True,
            'target_seed': 0,
            'lr': 5e-4,
            'device': 'cpu',
            'targets': None,
        },
    ),
    ('bench.build_interhand', ['--num_train=64'], {'num_train': 64, 'small': 32}),
    ('bench.convert_interhand', ['--num_examples=4'], {'raw_dir': None, 'num_examples': 4, 'repeats': 5}),
    (
        'bench.flops',
        ['--train_batch=2', '--notiming'],
        {'config': 'configs/dir_reference.py', 'train_batch': 2, 'timing': False},
    ),
    ('bench.input_pipeline', ['--seconds=0.5'], {'examples': 48, 'batch': 32, 'seconds': 0.5, 'rounds': 3}),
    ('bench.loop_conv', ['--batch=2'], {'batch': 2, 'repeats': 2}),
    ('bench.mano', ['--batches=1,4'], {'batches': ['1', '4'], 'repeats': 20}),
    (
        'bench.model',
        ['--batch_sizes=1', '--stages=2,3', '--dtype=bfloat16'],
        {'batch_sizes': ['1'], 'stages': ['2', '3'], 'train_batch': 8, 'dtype': 'bfloat16', 'mano_seed': 0},
    ),
    ('bench.plan_interhand', ['--fraction=0.5'], {'fraction': 0.5, 'out': None}),
    (
        'bench.train_throughput',
        ['--fusion=dense', '--forward_batches=64'],
        {'fusion': 'dense', 'forward_batches': ['64'], 'train_batch': 64, 'steps': 20, 'timing_lock': ''},
    ),
]


@pytest.mark.parametrize('name,argv,expected', PARSED, ids=[f'{p[0]}-{i}' for i, p in enumerate(PARSED)])
def test_a_command_line_parses_into_the_tools_flags(modules, name, argv, expected):
  module = _module(modules, name)
  cli.parse(module.FLAGS, [name, *argv])
  assert {key: getattr(module.FLAGS, key) for key in expected} == expected


def _dashed(flag: str) -> str:
  """The argparse-era spelling of a flag (dashes for underscores), which absl refuses."""
  return flag.replace('_', '-')


REFUSED = [
    ('dir_jax.predict', ['--bbox=10,10,5,20'], ['--bbox', 'x0 < x1']),
    ('dir_jax.predict', ['--bbox=0,0,inf,inf'], ['--bbox', 'finite']),
    ('dir_jax.predict', ['--bbox=1,2,3'], ['--bbox', 'four numbers']),
    ('dir_jax.predict', ['--batch_size=0'], ['--batch_size', 'positive integer']),
    ('dir_jax.predict', [_dashed('--mano_dir') + '=m'], ['Did you mean: mano_dir']),  # the old spelling
    ('dir_jax.predict', ['--render_size=big'], ['--render_size']),
    ('dir_jax.demo', ['--num_images=0'], ['--num_images']),
    ('data_prep.synthetic', ['--rig=sideways'], ['--rig', 'capture', 'frontal']),
    ('data_prep.synthetic', ['--num_train=-1'], ['--num_train']),
    ('data_prep.synthetic', ['--hand_separation_cm=4'], ['hand_separation_cm', 'MIN,MAX']),
    ('data_prep.synthetic', ['--hand_separation_cm=9,5'], ['hand_separation_cm', '0 < MIN <= MAX']),
    ('data_prep.synthetic', ['--captures_per_split=11'], ['--captures_per_split', '10']),
    ('data_prep.synthetic', ['--scene=easy'], ['--scene', 'interacting', 'demo']),
    ('data_prep.synthetic_mano', ['--seed=x'], ['--seed']),
    ('dir_jax.convert.compare_reference', ['--checkpoint=c'], ["'checkpoint'"]),  # now --torch_checkpoint
    ('dir_jax.convert.compare_reference', [_dashed('--no_train_steps')], ['Unknown command line flag']),
    ('tools.dump_torch_reference', ['--targets=t.npz'], ['--targets and --thread_spread need --train_steps N']),
    ('tools.dump_torch_reference', ['--images', 'a.png', 'b.png'], ['unexpected arguments', 'b.png']),
    ('bench.model', ['--dtype=float16'], ['--dtype']),
    ('bench.train_throughput', ['--fusion=sparse'], ['--fusion']),
]
# Every tool's required flags, so that each refused case fails on its own flag.
REQUIRED = {
    'dir_jax.predict': ['--checkpoint=c', '--images=i', '--out=o'],
    'dir_jax.demo': ['--workdir=w', '--eval=e', '--config=c', '--out=o'],
    'data_prep.synthetic': ['--out=o', '--num_train=1', '--num_test=1'],
    'data_prep.synthetic_mano': ['--out=o'],
    'dir_jax.convert.compare_reference': ['--fixture=f'],
    'dir_jax.convert.export_orbax': ['--torch_checkpoint=x.pth', '--out=o'],
    'tools.dump_torch_reference': [
        '--reference_code=r',
        '--torch_checkpoint=x.pth',
        '--mano_dir=m',
        '--images=a.png',
        '--out=o',
    ],
}


@pytest.mark.parametrize('name,argv,fragments', REFUSED, ids=[f'{r[0]}-{i}' for i, r in enumerate(REFUSED)])
def test_a_bad_value_is_refused_naming_the_flag(modules, capsys, name, argv, fragments):
  module = _module(modules, name)
  with pytest.raises(SystemExit) as exit_info:
    cli.parse(module.FLAGS, [name, *REQUIRED.get(name, []), *argv])
  assert exit_info.value.code == cli.USAGE_EXIT_STATUS
  err = capsys.readouterr().err
  assert err.startswith('FATAL Flags parsing error:')
  for fragment in fragments:
    assert fragment in err


@pytest.mark.parametrize('name', sorted(REQUIRED))
def test_required_flags_stay_required(modules, capsys, name):
  module = _module(modules, name)
  for i, missing in enumerate(REQUIRED[name]):
    with pytest.raises(SystemExit):
      cli.parse(module.FLAGS, [name, *REQUIRED[name][:i], *REQUIRED[name][i + 1 :]])
    flag = missing.split('=')[0]
    assert f'{flag} must have a value other than None' in capsys.readouterr().err


def test_predict_parse_args_refuses_a_bad_bbox(capsys):
  from dir_jax import predict  # pylint: disable=import-outside-toplevel

  with pytest.raises(SystemExit):
    predict.parse_args(['predict', '--checkpoint=c', '--images=i', '--out=o', '--bbox=5,5,5,9'])
  assert 'flag --bbox=5,5,5,9: expected x0 < x1 and y0 < y1' in capsys.readouterr().err


def test_a_second_parse_starts_from_the_defaults(modules):
  """main(argv) called twice in one process (the tests do): flags left out the second time are not remembered."""
  predict = modules['dir_jax.predict']
  cli.parse(predict.FLAGS, ['predict', '--checkpoint=c', '--images=i', '--out=o', '--bbox=1,2,3,4', '--batch_size=2'])
  cli.parse(predict.FLAGS, ['predict', '--checkpoint=c', '--images=i', '--out=o'])
  assert predict.FLAGS.bbox is None and predict.FLAGS.batch_size == 8
  with pytest.raises(SystemExit):  # fails half-way, after --out was read
    cli.parse(predict.FLAGS, ['predict', '--out=o', '--batch_size=0'])
  with pytest.raises(SystemExit):  # --out from the failed parse is not remembered either
    cli.parse(predict.FLAGS, ['predict', '--checkpoint=c', '--images=i'])


@pytest.mark.parametrize('name', TOOLS + BENCHES)
def test_help_lists_the_tools_flags(modules, capsys, name):
  module = _module(modules, name)
  with pytest.raises(SystemExit) as exit_info:
    cli.parse(module.FLAGS, [name, '--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  for flag in module.FLAGS:
    assert f'--{flag}:' in out or f'--[no]{flag}:' in out, flag


def test_the_command_line_runs_through_app_run():
  """`python -m TOOL`: --help prints the flags and exits 0; a bad value exits 2 naming the flag."""
  run = lambda *argv: subprocess.run(
      [sys.executable, '-m', 'data_prep.synthetic_mano', *argv],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  shown = run('--help')
  assert shown.returncode == 0 and '--out: output folder' in shown.stdout and '--seed' in shown.stdout
  refused = run('--out=o', '--seed=x')
  assert refused.returncode == cli.USAGE_EXIT_STATUS and 'flag --seed=x' in refused.stderr
