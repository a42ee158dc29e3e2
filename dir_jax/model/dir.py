"""The DIR network: ResNet-50 encoder, initial regressor, refinement stages, seg/dense heads.

Map of the paper's Figure 2 onto the modules: docs/architecture.md.

Refinement stages are grouped: a group is a run of consecutive stages with the same resolution, skip
source and mask threshold, after the first stage. Each group runs as one `nn.scan` over stacked
parameters, so compile time does not grow with the number of stages in a group. The released code's
two stages (16x16 from c3, then 32x32 from c2) are two groups of one; the paper's three-stage variant
is a group of one at 16x16 and a group of two at 32x32.
"""

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dir_jax.mano import ManoAsset, ManoPair
from dir_jax.mano.constants import NUM_BETAS, NUM_FACES, NUM_MANO_JOINTS, NUM_PCA, NUM_VERTS
from dir_jax.model import heads, loop_conv
from dir_jax.model.config import ModelConfig, StageSpec
from dir_jax.model.encoder import ResNet50
from dir_jax.model.layers import upsample_bilinear
from dir_jax.model.refinement import JointImageRefinement, RefinementStage
from dir_jax.model.regressor import InitRegressor

ENCODER_LEVELS = {'c1': 0, 'c2': 1, 'c3': 2, 'c4': 3}


def stage_groups(stages: Sequence[StageSpec], scan: bool = True) -> list[list[int]]:
  """Indices of the stages that run together in one `nn.scan` (see module docstring).

  The first stage is always alone (its input is the 2048-channel c4); with `scan`, a later stage
  joins the previous one's group when their specs are equal; without, every stage is its own group.
  """
  groups = []
  for i, spec in enumerate(stages):
    if scan and i >= 2 and stages[i - 1] == spec:
      groups[-1].append(i)
    else:
      groups.append([i])
  return groups


class Decoder(nn.Module):
  """Refinement stages and the seg/dense heads. Outputs per stage plus heads at the last size.

  docs/architecture.md#stage-iteration, docs/architecture.md#heads.
  """

  config: ModelConfig
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, encoder_maps, init_result, mano: ManoPair, train: bool):
    carry_feat, prev = encoder_maps[-1], init_result
    results, stage_feats = [], []
    img_feat_dim = self.config.img_feat_dim
    for g, group in enumerate(stage_groups(self.config.stages, self.config.scan_stages)):
      spec = self.config.stages[group[0]]
      factor = spec.size // carry_feat.shape[1]
      if factor == 2:
        carry_feat = upsample_bilinear(carry_feat, 2)
      elif factor != 1 or carry_feat.shape[1] * factor != spec.size:
        raise ValueError(f'stage {group[0]}: size {spec.size} is not 1x or 2x the previous {carry_feat.shape[1]}')
      skip_src = encoder_maps[ENCODER_LEVELS[spec.skip]]
      if skip_src.shape[1] > spec.size:  # encoder maps above the stage size are average-pooled down
        pool = skip_src.shape[1] // spec.size
        skip_src = nn.avg_pool(skip_src, (pool, pool), strides=(pool, pool))
      projecter = JointImageRefinement(self.config, spec.size, spec.threshold, self.dtype, parent=None)
      stage_args = (projecter, img_feat_dim, train, self.dtype)
      if g == 0:  # c4 in, 256 channels out: not a scan body; parameters are not stacked
        (carry_feat, prev), (result, feats) = RefinementStage(*stage_args, name=f'group_{g}')(
            (carry_feat, prev), skip_src, mano
        )
        results.append(result)
        stage_feats.append(feats)
        continue
      scanned = nn.scan(
          RefinementStage,
          variable_axes={'params': 0, 'batch_stats': 0, 'intermediates': 0, 'forced_masks': 0},
          split_rngs={'params': True},
          in_axes=(nn.broadcast, nn.broadcast),
          length=len(group),
      )
      with loop_conv.loop_body():  # the CPU workaround for convs in a loop (dir_jax/model/loop_conv.py)
        (carry_feat, prev), (group_results, group_feats) = scanned(*stage_args, name=f'group_{g}')(
            (carry_feat, prev), skip_src, mano
        )
      for k in range(len(group)):
        results.append(jax.tree.map(lambda x, k=k: x[k], group_results))
        stage_feats.append(jax.tree.map(lambda x, k=k: x[k], group_feats))
    seg, dense = heads.seg_and_dense(carry_feat, img_feat_dim, train, self.dtype)
    return results, stage_feats, seg, dense


class DIR(nn.Module):
  """DIR for a batch of images.

  `__call__(images (B, 256, 256, 3) ImageNet-normalised RGB, mano, train)` returns a dict:
    'stages': list of stage results, stage 0 = initial regressor, then one per refinement stage; each
      a dict of `joint_xyz_{side}` (B,21,3) m, `mesh_xyz_{side}` (B,778,3) m (centred at
      `center_idx`), `joint_uv_{side}` (B,21,2), `mesh_uv_{side}` (B,778,2) in [-1,1],
      `mano_para_{side}` (B,64), `camera_{side}` (B,3), `offset` (B,3) in 0.15 m units.
    'stage_features': per refinement stage {img_feat (B,S,S,256), joint_feat_{side} (B,21,64),
      vis_img_feat (B,S,S,planes)}.
    'seg' (B,S,S,3) logits and 'dense' (B,S,S,3) at the last stage's size.
  """

  config: ModelConfig = ModelConfig()
  dtype: Any = None  # compute dtype (e.g. jnp.bfloat16); parameters stay float32

  @nn.compact
  def __call__(self, images, mano: ManoPair, train: bool = False):
    chex.assert_rank(images, 4)
    chex.assert_axis_dimension(images, 3, 3)
    encoder_maps = ResNet50(self.config.encoder_width, name='backbone', dtype=self.dtype)(images, train)
    for i, feature_map in enumerate(encoder_maps):
      self.sow('intermediates', f'backbone_c{i + 1}', feature_map)
    config = self.config
    init = InitRegressor(
        config.center_idx, config.attention_dim, config.camera_scale_init, name='init_regressor', dtype=self.dtype
    )(encoder_maps[-1], mano, train)
    results, feats, seg, dense = Decoder(config, name='decoder', dtype=self.dtype)(encoder_maps, init, mano, train)
    return {'stages': [init] + results, 'stage_features': feats, 'seg': seg, 'dense': dense}


def placeholder_mano() -> ManoPair:
  """A MANO pair of zeros with the official shapes: enough to trace the model for its variable shapes."""

  def asset(side):
    return ManoAsset(
        v_template=np.zeros((NUM_VERTS, 3), np.float32),
        shapedirs=np.zeros((NUM_VERTS, 3, NUM_BETAS), np.float32),
        posedirs=np.zeros((NUM_VERTS, 3, 9 * (NUM_MANO_JOINTS - 1)), np.float32),
        J_regressor=np.zeros((NUM_MANO_JOINTS, NUM_VERTS), np.float32),
        weights=np.zeros((NUM_VERTS, NUM_MANO_JOINTS), np.float32),
        faces=np.zeros((NUM_FACES, 3), np.int32),
        hands_components=np.eye(NUM_PCA, dtype=np.float32),
        hands_mean=np.zeros(NUM_PCA, np.float32),
        side=side,
    )

  return ManoPair(left=asset('left'), right=asset('right'))


def abstract_variables(model: DIR, image_size: int = 256) -> dict:
  """The model's variables as ShapeDtypeStructs (no computation, no MANO files needed)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, placeholder_mano()), images)
