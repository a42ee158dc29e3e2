"""One refinement stage: image features -> joint features -> new MANO -> image features.

Map: docs/architecture.md#refinement-stage.

`Projecter` is the reference's `Joint2BoneFeature`; `RefinementStage` wraps it with the decoder's
skip, fusion and enhance Residual blocks so that stages of equal shape can run under `nn.scan`.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dir_jax.mano import ManoPair
from dir_jax.model import image_space
from dir_jax.model.config import OFFSET_UNIT_M, ModelConfig
from dir_jax.model.fusion import PlaneFusion
from dir_jax.model.joint_space import InterHandTransformer, JointGCN
from dir_jax.model.layers import ConvBNReLUConv, Residual, full_precision, sample_joints
from dir_jax.model.regressor import RegressorOffset

# Projections whose planes are scalar fields times joint features (fused by `PlaneFusion`), with the
# function giving the fields and the joints each plane blends.
_SCALAR_FIELD_PROJECTIONS = {'bone': (image_space.bone_coefficients, image_space.BONE_ENDS),
                             'mfp': (image_space.joint_coefficients, image_space.JOINT_ENDS)}


class Img2Joint(nn.Module):
  """Bilinear samples of the feature map at the joints, embedded per joint: (B,S,S,C) -> (B,21,emb)."""
  emb_dim: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feature_map, joints_uv, train: bool):
    sampled = sample_joints(feature_map, jax.lax.stop_gradient(joints_uv))
    return ConvBNReLUConv(self.emb_dim, self.emb_dim, name='filters', dtype=self.dtype)(sampled, train)


class Projecter(nn.Module):
  """The reference's `Joint2BoneFeature` (docs/architecture.md#refinement-stage).

  Attributes:
    config: the network's `ModelConfig` (projection, ablation switches, widths, fusion, per-hand
      BatchNorm statistics of the modules shared by both hands: docs/quirks.md#q15).
    size: feature grid side S of this stage.
    threshold: projection mask radius in cells (1 at S=16, 2 at S=32 in the released code).
    dtype: compute dtype.
  """
  config: ModelConfig
  size: int
  threshold: float
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, img_feat, prev: dict, mano: ManoPair, train: bool):
    chex.assert_shape(img_feat, (None, self.size, self.size, None))
    config = self.config
    dense_seq = lambda name, **kw: ConvBNReLUConv(config.emb_dim, config.emb_dim, name=name, dtype=self.dtype, **kw)
    # Modules shared by both hands (docs/quirks.md#q15): their BatchNorm's running statistics are the
    # blend of both hands' calls, or one slot per hand with `per_hand_bn_stats`.
    shared_slots = ('left', 'right') if config.per_hand_bn_stats else ()
    slot = lambda side: side if config.per_hand_bn_stats else None
    global_pos_emb = dense_seq('global_pos_emb', bn_slots=shared_slots)
    half_offset = prev['offset'][:, None, :] / 2
    feats = {}
    for side, sign in (('left', -1), ('right', 1)):
      xyz_n = prev[f'joint_xyz_{side}'] / OFFSET_UNIT_M
      img = Img2Joint(config.emb_dim, name=f'img2joint_{side}', dtype=self.dtype)(
          img_feat, prev[f'joint_uv_{side}'], train)
      self.sow('intermediates', f'img2joint_{side}_out', img)
      pos = dense_seq(f'pos_emb_{side}')(xyz_n, train)
      self.sow('intermediates', f'pos_emb_{side}_out', pos)
      x = pos + img
      if config.use_gcn:
        x = JointGCN(config.emb_dim, name=f'gcn_{side}')(x, train)
        self.sow('intermediates', f'gcn_{side}_out', x)
      # Both hands placed at -/+ half the predicted offset; one module shared by both (docs/quirks.md#q15).
      glob = global_pos_emb(xyz_n + sign * half_offset, train, slot(side))
      self.sow('intermediates', 'global_pos_emb_out', glob)
      feats[side] = x + glob
    joint_feat = jnp.concatenate([feats['left'], feats['right']], axis=1)
    if config.use_transformer:
      joint_feat = InterHandTransformer(config.joint_dim, blocks=config.transformer_blocks, name='interaction',
                                        dtype=self.dtype)(joint_feat)
    else:
      joint_feat = nn.Dense(config.joint_dim, name='interaction_linear', dtype=self.dtype)(joint_feat)
    self.sow('intermediates', 'interaction_out', joint_feat)
    feat_left, feat_right = jnp.split(joint_feat, 2, axis=1)
    result = RegressorOffset(config.center_idx, config.camera_scale_init, name='regressor', dtype=self.dtype)(
        feat_left, feat_right, prev, mano)

    proj_feat_emb = ConvBNReLUConv(config.joint_dim, config.joint_dim, name='proj_feat_emb', dtype=self.dtype,
                                   bn_slots=shared_slots)
    joint_feats = {}
    for side, feat in (('left', feat_left), ('right', feat_right)):
      joint_feats[side] = proj_feat_emb(feat, train, slot(side))
      self.sow('intermediates', 'proj_feat_emb_out', joint_feats[side])
    if config.projection in _SCALAR_FIELD_PROJECTIONS:
      fused, vis_img_feat = self._fuse_scalar_fields(result, joint_feats, train)
    else:
      planes = [self._project(result[f'joint_uv_{side}'], joint_feats[side]) for side in ('left', 'right')]
      fused = ConvBNReLUConv(config.img_feat_dim, config.img_feat_dim, kernel=3, name='fusion', dtype=self.dtype)(
          jnp.concatenate(planes, axis=-1), train)
      vis_img_feat = planes[0] + planes[1]
    return result, {'img_feat': fused, 'joint_feat_left': joint_feats['left'],
                    'joint_feat_right': joint_feats['right'], 'vis_img_feat': vis_img_feat}

  def _fuse_scalar_fields(self, result, joint_feats, train):
    """`bone` / `mfp`: scalar fields from this stage's uv (float32, not detached, docs/quirks.md#q14) -> fusion.

    Masks normally come from thresholding the distances. A `forced_masks` collection given to
    `apply` ({'left', 'right'}: (B, S*S, K) bool per stage, stacked like `params` in scanned groups)
    replaces them: `compare_reference` forces the reference's own masks so that a cell whose distance
    lies within rounding of the threshold cannot make the downstream comparison a matter of luck.

    Returns the fused (B, S, S, img_feat_dim) map and the sum of both hands' planes (B, S, S, K * C) for
    inspection (only computed where an output uses it).
    """
    coefficients, ends = _SCALAR_FIELD_PROJECTIONS[self.config.projection]
    coef = {}
    for side in ('left', 'right'):
      uv = full_precision(result[f'joint_uv_{side}'])
      if self.has_variable('forced_masks', side):
        mask = self.get_variable('forced_masks', side)
        chex.assert_shape(mask, (uv.shape[0], self.size * self.size, ends.shape[0]))
        coef[side], distance = jax.vmap(coefficients, in_axes=(0, None, None, 0))(uv, self.size, self.threshold, mask)
      else:
        coef[side], distance = jax.vmap(coefficients, in_axes=(0, None, None))(uv, self.size, self.threshold)
      self.sow('intermediates', f'{self.config.projection}_dist_{side}_out', distance)
    coef_both = jnp.stack([coef['left'], coef['right']], axis=2)  # (B, S*S, 2, K, E)
    coef_both = coef_both.reshape(coef_both.shape[0], self.size, self.size, *coef_both.shape[2:])
    feat_both = jnp.stack([joint_feats['left'], joint_feats['right']], axis=1)  # (B, 2, 21, C)
    fused = PlaneFusion(self.config.img_feat_dim, tuple(map(tuple, ends.tolist())), self.config.fusion, self.dtype,
                        name='fusion')(coef_both, feat_both, train)
    to_planes = jax.vmap(image_space.planes_from_coefficients, in_axes=(0, 0, None))
    vis_img_feat = sum(to_planes(coef[side], joint_feats[side], ends) for side in ('left', 'right'))
    return fused, vis_img_feat.reshape(fused.shape[0], self.size, self.size, -1)

  def _project(self, joints_uv, joint_feat):
    """`sfp` / `mhp` planes from this stage's uv (float32, not detached) -> (B, S, S, channels)."""
    joints_uv = full_precision(joints_uv)
    if self.config.projection == 'sfp':
      return jax.vmap(image_space.project_single_plane, in_axes=(0, 0, None, None))(
          joints_uv, joint_feat, self.size, self.threshold)
    # 'mhp', the only other projection ModelConfig admits here.
    heatmaps = jax.vmap(image_space.project_heatmaps, in_axes=(0, None, None))
    return heatmaps(joints_uv, self.size, self.config.heatmap_sigma).astype(joint_feat.dtype)


class RefinementStage(nn.Module):
  """Decoder stage: F = fusion_layer([E_in, skip_layer(skip_src)]); projecter; E = enhance_layer([F, img_feat]).

  Call signature fits `nn.scan`: carry = (E_in (B,S,S,C), previous stage result), broadcast inputs
  (skip source (B,S,S,Cs), MANO pair). Returns (E, result) as the new carry and (result, features)
  as the per-stage output.
  """
  projecter: Projecter
  img_feat_dim: int = 256
  train: bool = False
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, carry, skip_src, mano: ManoPair):
    e_in, prev = carry
    # Stage inputs are detached (docs/architecture.md#gradient-paths).
    prev = jax.tree.map(jax.lax.stop_gradient, prev)
    residual = functools.partial(Residual, self.img_feat_dim, dtype=self.dtype)
    skip = residual(name='skip_layer')(skip_src, self.train)
    self.sow('intermediates', 'skip_layer_out', skip)
    fused = residual(name='fusion_layer')(jnp.concatenate([e_in, skip.astype(e_in.dtype)], axis=-1), self.train)
    self.sow('intermediates', 'fusion_layer_out', fused)
    result, feats = self.projecter(fused, prev, mano, self.train)
    enhanced = residual(name='enhance_layer')(
        jnp.concatenate([fused, feats['img_feat'].astype(fused.dtype)], axis=-1), self.train)
    self.sow('intermediates', 'enhance_layer_out', enhanced)
    return (enhanced, result), (result, feats)

