"""The embedded default (`make demo`): a small model trained on CPU on the synthetic InterHand2.6M."""

from configs import tiny


def get_config():
  config = tiny.get_config()
  config.mano_dir = 'outputs/demo/raw/mano'
  config.data.data_dir = 'outputs/demo/tfds'
  config.model.input_size = 128
  config.model.stages = ((8, 'c3', 1.0), (16, 'c2', 2.0))
  config.model.encoder_width = 16
  config.model.attention_dim = 64
  config.model.img_feat_dim = 64
  config.model.emb_dim = 64
  config.model.joint_dim = 32
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 600
  config.optimizer.learning_rate = 1e-3
  config.data.shuffle_buffer_size = 512
  config.log_every_steps = 25
  config.checkpoint_every_steps = 200
  config.eval_every_steps = 300
  config.eval_voxel_m = 0.005
  return config
