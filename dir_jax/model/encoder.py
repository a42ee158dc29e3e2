"""ResNet-50 encoder in torchvision's layout (v1.5: stride in the 3x3 conv), NHWC (docs/architecture.md#encoder).

Returns the four stage outputs; module names follow torchvision (`conv1`, `bn1`, `layer1`..`layer4`,
blocks '0', '1', ..., `downsample` '0'/'1'), so torchvision and DIR state dicts map one to one.
"""

import flax.linen as nn
import jax.numpy as jnp

from dir_jax.model.layers import BatchNorm, conv

# (blocks, width multiple of the stem width, stride) of layer1..layer4; output channels = 4 * width.
RESNET50_STAGES = ((3, 1, 1), (4, 2, 2), (6, 4, 2), (3, 8, 2))


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1-BN, + identity or downsample, ReLU."""

  width: int
  stride: int
  downsample: bool
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    out = self.width * 4
    h = nn.relu(BatchNorm(name='bn1')(conv(self.width, 1, bias=False, name='conv1', dtype=self.dtype)(x), train))
    h = conv(self.width, 3, self.stride, 1, bias=False, name='conv2', dtype=self.dtype)(h)
    h = nn.relu(BatchNorm(name='bn2')(h, train))
    h = BatchNorm(name='bn3')(conv(out, 1, bias=False, name='conv3', dtype=self.dtype)(h), train)
    if self.downsample:
      ds = DownsampleBranch(out, self.stride, name='downsample', dtype=self.dtype)
      x = ds(x, train)
    return nn.relu(h + x)


class DownsampleBranch(nn.Module):
  """Sequential[conv1x1(stride), BN] named '0', '1'."""

  features: int
  stride: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    return BatchNorm(name='1')(conv(self.features, 1, self.stride, bias=False, name='0', dtype=self.dtype)(x), train)


class ResLayer(nn.Module):
  blocks: int
  width: int
  stride: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(self.blocks):
      first = i == 0
      x = Bottleneck(self.width, self.stride if first else 1, downsample=first, name=str(i), dtype=self.dtype)(x, train)
    return x


class ResNet50(nn.Module):
  """Image (B, H, W, 3), ImageNet-normalised -> [c1 (B,H/4,W/4,256), c2 (/8, 512), c3 (/16, 1024), c4 (/32, 2048)].

  `width` is the stem width (64 in ResNet-50); channel counts above are for 64 and scale with it
  (small widths make small test models; only 64 loads torchvision or DIR weights).
  """

  width: int = 64
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, images, train: bool):
    x = conv(self.width, 7, 2, 3, bias=False, name='conv1', dtype=self.dtype)(images.astype(self.dtype or images.dtype))
    x = nn.relu(BatchNorm(name='bn1')(x, train))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features = []
    for i, (blocks, multiple, stride) in enumerate(RESNET50_STAGES):
      x = ResLayer(blocks, self.width * multiple, stride, name=f'layer{i + 1}', dtype=self.dtype)(x, train)
      features.append(x)
    return features
