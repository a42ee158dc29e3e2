"""A small model for tests: narrow encoder and decoder at 64x64 input, a few steps on CPU."""

from configs import dir_reference


def get_config():
  config = dir_reference.get_config()
  config.model.input_size = 64
  config.model.stages = ((4, 'c3', 1.0), (8, 'c2', 2.0))
  config.model.encoder_width = 8
  config.model.attention_dim = 32
  config.model.img_feat_dim = 32
  config.model.emb_dim = 32
  config.model.joint_dim = 16
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 6
  config.optimizer.schedule_unit = 'step'
  config.optimizer.learning_rate = 1e-3
  config.data.shuffle_buffer_size = 16
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.eval_voxel_m = None
  return config
