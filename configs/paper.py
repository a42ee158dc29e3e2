"""The paper's stated setup: lr 3e-4 and three refinement stages (16x16, then 32x32 twice, scanned)."""

from configs import dir_reference


def get_config():
  config = dir_reference.get_config()
  config.optimizer.learning_rate = 3e-4
  config.model.stages = ((16, 'c3', 1.0), (32, 'c2', 2.0), (32, 'c2', 2.0))
  return config
