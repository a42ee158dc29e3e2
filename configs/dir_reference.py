"""The released code's training setup (docs/architecture.md#training).

  python train.py --config=configs/dir_reference.py --workdir=runs/dir_ref \
      --config.data.data_dir=DATA --config.mano_dir=MANO --config.torchvision_resnet50=resnet50.pth

Batch 64, AdamW lr 5e-4, weight decay 0.01, cosine decay to 0 over 50 epochs stepped per epoch, two
refinement stages (16x16 from c3, 32x32 from c2), ImageNet-pretrained encoder when a torchvision
ResNet-50 state dict is given. Augmentation as the reference's loader.
"""

import ml_collections

from dir_jax import loss_settings
from dir_jax.data import settings
from dir_jax.model.config import ModelConfig


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.mano_dir = 'mano'  # MANO_LEFT.pkl / MANO_RIGHT.pkl from https://mano.is.tue.mpg.de
  config.image_size = 256  # side of the stored crops (pixels); intrinsics refer to it
  config.data = settings.pipeline_config()
  config.data.data_dir = 'data/tfds'  # tfds data_dir holding interhand26m/ (data_prep/interhand26m)

  # The network: every ModelConfig field (dir_jax/model/config.py documents each); the released code's.
  config.model = ml_collections.ConfigDict(ModelConfig().to_dict())
  config.model.input_size = 256  # network input side; batches are resized on the accelerator if different
  config.compute_dtype = 'float32'  # or 'bfloat16' (parameters stay float32)

  config.loss = loss_settings.default_loss_config()

  config.batch_size = 64  # global, over all devices and hosts
  # Rows per group of training-mode BatchNorm statistics: 0 = the global batch (the reference, one GPU);
  # batch_size // device count = per device, no BatchNorm all-reduce (README "Pod recipe").
  config.batch_norm_group_rows = 0
  config.eval_batch_size = 64
  config.num_epochs = 50
  config.num_train_steps = -1  # > 0 overrides num_epochs
  config.optimizer = ml_collections.ConfigDict(
      dict(learning_rate=5e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, schedule_unit='epoch', warmup_steps=0)
  )  # CosineAnnealingLR stepped once per epoch, as train.py
  config.init_checkpoint = ''  # orbax directory (ours or export_orbax output) to start from
  config.torchvision_resnet50 = ''  # torchvision ResNet-50 state dict (.pth/.npz) for the encoder

  # Global batches put on the devices ahead of the running step (host-to-device transfer overlaps it).
  config.device_prefetch_batches = 2
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.eval_every_steps = 5000  # 0 = no periodic evaluation
  config.eval_at_start = False  # also evaluate the initial parameters (metrics_0.json)
  config.eval_voxel_m = 0.005  # interpenetration voxel; None skips the volume (faster evaluation)
  # Of the last stage, lower is better: PROTOCOL_KEY/METRIC/HAND (dir_jax/protocol.py; this is DIR's
  # setting: wrist, scaled, MANO joints, interacting).
  config.best_metric = 'wrist-scaled-mano-interacting/mpjpe/all'
  return config
