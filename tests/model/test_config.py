"""ModelConfig: the one declaration of the network's fields, shared by DIR, config files and checkpoints."""

import dataclasses
import glob
import os

import pytest

from configs import load_config
from dir_jax import checkpoint
from dir_jax.model.config import ModelConfig, StageSpec

CONFIG_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), '..', '..', 'configs', '[!_]*.py')))


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_every_config_file_holds_exactly_the_model_fields(path):
  config = load_config(path)
  fields = {field.name for field in dataclasses.fields(ModelConfig)}
  assert set(config.model) == fields | {'input_size'}
  model = checkpoint.model_from_config(config.model)
  assert model.config.to_dict() == {name: config.model[name] for name in fields}


def test_a_misspelt_config_field_is_refused():
  config = load_config(CONFIG_FILES[0])
  config.model.use_gnc = False  # meant use_gcn: would otherwise change nothing
  with pytest.raises(ValueError, match=r"unknown model config fields \['use_gnc'\]"):
    checkpoint.model_from_config(config.model)


def test_sequences_become_hashable_tuples():
  config = ModelConfig(stages=[[8, 'c3', 1.0], (16, 'c2', 2.0)], transformer_blocks=[0, 1])
  assert config.stages == (StageSpec(8, 'c3', 1.0), StageSpec(16, 'c2', 2.0))
  assert config.transformer_blocks == (0, 1)
  assert hash(config) == hash(ModelConfig.from_mapping(config.to_dict()))


@pytest.mark.parametrize(
    'changes, message',
    [({'stages': ()}, 'at least one refinement stage'), ({'fusion': 'sparse'}, 'fusion must be one of')],
)
def test_invalid_values_are_refused(changes, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**changes)
