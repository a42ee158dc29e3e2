"""Experiment configs (ml_collections ConfigDict files, one per experiment)."""

import importlib.util

import ml_collections


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file given by path (e.g. 'configs/synthetic.py'), as `--config=` reads it."""
  spec = importlib.util.spec_from_file_location('loaded_config', path)
  if spec is None:
    raise FileNotFoundError(f'config file {path!r} not found; pass a path such as configs/dir_reference.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
