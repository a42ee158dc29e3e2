"""Experiment configs (ml_collections ConfigDict files, one per experiment)."""

import importlib.util
import os

import ml_collections

# The released code's config, resolved inside this package (never a `configs/` of the current folder).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dir_reference.py')


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file given by path (e.g. 'configs/synthetic.py'), as `--config=` reads it."""
  spec = importlib.util.spec_from_file_location('loaded_config', path)
  if spec is None:
    raise FileNotFoundError(f'config file {path!r} not found; pass a path such as configs/dir_reference.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
