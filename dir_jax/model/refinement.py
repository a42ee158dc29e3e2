"""One refinement stage: image features -> joint features -> new MANO -> image features.

Map: docs/architecture.md#refinement-stage.

`JointImageRefinement` is the reference's `Joint2BoneFeature`, one method per box of Figure 2;
`RefinementStage` wraps it with the decoder's skip, fusion and enhance Residual blocks so that stages
of equal shape can run under `nn.scan`.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dir_jax.mano import ManoPair
from dir_jax.mano.constants import SIDES
from dir_jax.model import image_space
from dir_jax.model.config import OFFSET_UNIT_M, ModelConfig
from dir_jax.model.fusion import PlaneFusion
from dir_jax.model.joint_space import InterHandTransformer, JointGCN
from dir_jax.model.layers import ConvBNReLUConv, Residual, full_precision, sample_joints
from dir_jax.model.regressor import RefinementRegressor

# Projections whose planes are scalar fields times joint features (fused by `PlaneFusion`), with the
# function giving the fields and the joints each plane blends.
_SCALAR_FIELD_PROJECTIONS = {
    'bone': (image_space.bone_coefficients, image_space.BONE_ENDS),
    'mfp': (image_space.joint_coefficients, image_space.JOINT_ENDS),
}


class Img2Joint(nn.Module):
  """Bilinear samples of the feature map at the joints, embedded per joint: (B,S,S,C) -> (B,21,emb)."""

  emb_dim: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, feature_map, joints_uv, train: bool):
    sampled = sample_joints(feature_map, jax.lax.stop_gradient(joints_uv))
    return ConvBNReLUConv(self.emb_dim, self.emb_dim, name='filters', dtype=self.dtype)(sampled, train)


class JointImageRefinement(nn.Module):
  """One stage's exchange between image and joint space (the reference's `Joint2BoneFeature`).

  Figure 2's boxes, one method each, in order: `sample_joint_features` (bilinear samples at the
  previous joints + local and global position embeddings + GCN), `inter_hand_interaction`
  (transformer), `regress` (joint-space regression of new MANO parameters), `projection_features`,
  then `fuse_scalar_fields` (bone / mfp) or `project_planes` + conv (sfp / mhp): image-space
  projection and plane fusion. docs/architecture.md#refinement-stage.

  The stage holds it as `projecter` (the reference's attribute name, so checkpoints map one to one).

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
    """(B,S,S,C) stage features F, previous stage result -> (new stage result, stage features: `img_feat`
    (B,S,S,img_feat_dim) fused planes, `joint_feat_{side}` (B,21,joint_dim), `vis_img_feat` planes)."""
    chex.assert_shape(img_feat, (None, self.size, self.size, None))
    joint_feat = self.sample_joint_features(img_feat, prev, train)
    feat_left, feat_right = jnp.split(self.inter_hand_interaction(joint_feat), 2, axis=1)
    result = self.regress(feat_left, feat_right, prev, mano)
    joint_feats = self.projection_features({'left': feat_left, 'right': feat_right}, train)
    if self.config.projection in _SCALAR_FIELD_PROJECTIONS:
      fused, vis_img_feat = self.fuse_scalar_fields(result, joint_feats, train)
    else:
      planes = [self.project_planes(result[f'joint_uv_{side}'], joint_feats[side]) for side in SIDES]
      fused = ConvBNReLUConv(
          self.config.img_feat_dim, self.config.img_feat_dim, kernel=3, name='fusion', dtype=self.dtype
      )(jnp.concatenate(planes, axis=-1), train)
      vis_img_feat = planes[0] + planes[1]
    return result, {
        'img_feat': fused,
        'joint_feat_left': joint_feats['left'],
        'joint_feat_right': joint_feats['right'],
        'vis_img_feat': vis_img_feat,
    }

  def _shared_by_both_hands(self):
    """(BatchNorm slots, slot of a side) of the modules called for both hands (docs/quirks.md#q15):
    their running statistics blend both hands' calls, or keep one slot per hand with `per_hand_bn_stats`."""
    if self.config.per_hand_bn_stats:
      return SIDES, lambda side: side
    return (), lambda side: None

  def sample_joint_features(self, img_feat, prev: dict, train: bool):
    """Joint sampling and position embeddings: (B,S,S,C), previous result -> (B, 42, emb_dim), left then right.

    Per hand: `img2joint` (bilinear samples at the previous uv, embedded) + `pos_emb` (local, the
    joints in 0.15 m units) -> GCN (`use_gcn`) -> + `global_pos_emb` (one module for both hands, each
    placed at -/+ half the predicted offset).
    """
    config = self.config
    shared_slots, slot = self._shared_by_both_hands()
    embedding = lambda name, **kw: ConvBNReLUConv(config.emb_dim, config.emb_dim, name=name, dtype=self.dtype, **kw)
    global_pos_emb = embedding('global_pos_emb', bn_slots=shared_slots)
    half_offset = prev['offset'][:, None, :] / 2
    feats = []
    for side, sign in (('left', -1), ('right', 1)):
      xyz_n = prev[f'joint_xyz_{side}'] / OFFSET_UNIT_M
      img = Img2Joint(config.emb_dim, name=f'img2joint_{side}', dtype=self.dtype)(
          img_feat, prev[f'joint_uv_{side}'], train
      )
      self.sow('intermediates', f'img2joint_{side}_out', img)
      pos = embedding(f'pos_emb_{side}')(xyz_n, train)
      self.sow('intermediates', f'pos_emb_{side}_out', pos)
      x = pos + img
      if config.use_gcn:
        x = JointGCN(config.emb_dim, name=f'gcn_{side}')(x, train)
        self.sow('intermediates', f'gcn_{side}_out', x)
      glob = global_pos_emb(xyz_n + sign * half_offset, train, slot(side))
      self.sow('intermediates', 'global_pos_emb_out', glob)
      feats.append(x + glob)
    return jnp.concatenate(feats, axis=1)

  def inter_hand_interaction(self, joint_feat):
    """Both hands' joints attend to each other: (B, 42, emb_dim) -> (B, 42, joint_dim). The transformer,
    or a per-joint Dense without it (`use_transformer=False`)."""
    config = self.config
    if config.use_transformer:
      joint_feat = InterHandTransformer(
          config.joint_dim, blocks=config.transformer_blocks, name='interaction', dtype=self.dtype
      )(joint_feat)
    else:
      joint_feat = nn.Dense(config.joint_dim, name='interaction_linear', dtype=self.dtype)(joint_feat)
    self.sow('intermediates', 'interaction_out', joint_feat)
    return joint_feat

  def regress(self, feat_left, feat_right, prev: dict, mano: ManoPair) -> dict:
    """Joint-space regression: new MANO parameters and offset -> the stage result (`hand_outputs`)."""
    return RefinementRegressor(
        self.config.center_idx, self.config.camera_scale_init, name='regressor', dtype=self.dtype
    )(feat_left, feat_right, prev, mano)

  def projection_features(self, feats: dict, train: bool) -> dict:
    """The per-joint features drawn into image space: `proj_feat_emb`, one module for both hands."""
    shared_slots, slot = self._shared_by_both_hands()
    proj_feat_emb = ConvBNReLUConv(
        self.config.joint_dim, self.config.joint_dim, name='proj_feat_emb', dtype=self.dtype, bn_slots=shared_slots
    )
    out = {}
    for side in SIDES:
      out[side] = proj_feat_emb(feats[side], train, slot(side))
      self.sow('intermediates', 'proj_feat_emb_out', out[side])
    return out

  def fuse_scalar_fields(self, result, joint_feats, train):
    """Image-space projection and plane fusion for `bone` / `mfp`: scalar fields from this stage's uv (float32, not detached, docs/quirks.md#q14) -> fusion.

    Masks normally come from thresholding the distances. A `forced_masks` collection given to
    `apply` ({'left', 'right'}: (B, S*S, K) bool per stage, stacked like `params` in scanned groups)
    replaces them: `compare_reference` forces the reference's own masks so that a cell whose distance
    lies within rounding of the threshold cannot make the downstream comparison a matter of luck.

    Returns the fused (B, S, S, img_feat_dim) map and the sum of both hands' planes (B, S, S, K * C) for
    inspection (only computed where an output uses it).
    """
    coefficients, ends = _SCALAR_FIELD_PROJECTIONS[self.config.projection]
    coef = {}
    for side in SIDES:
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
    fused = PlaneFusion(
        self.config.img_feat_dim, tuple(map(tuple, ends.tolist())), self.config.fusion, self.dtype, name='fusion'
    )(coef_both, feat_both, train)
    to_planes = jax.vmap(image_space.planes_from_coefficients, in_axes=(0, 0, None))
    vis_img_feat = sum(to_planes(coef[side], joint_feats[side], ends) for side in SIDES)
    return fused, vis_img_feat.reshape(fused.shape[0], self.size, self.size, -1)

  def project_planes(self, joints_uv, joint_feat):
    """Image-space projection for `sfp` / `mhp`: planes from this stage's uv (float32, not detached) ->
    (B, S, S, channels)."""
    joints_uv = full_precision(joints_uv)
    if self.config.projection == 'sfp':
      return jax.vmap(image_space.project_single_plane, in_axes=(0, 0, None, None))(
          joints_uv, joint_feat, self.size, self.threshold
      )
    # 'mhp', the only other projection ModelConfig admits here.
    heatmaps = jax.vmap(image_space.project_heatmaps, in_axes=(0, None, None))
    return heatmaps(joints_uv, self.size, self.config.heatmap_sigma).astype(joint_feat.dtype)


class RefinementStage(nn.Module):
  """Decoder stage: F = fusion_layer([E_in, skip_layer(skip_src)]); projecter; E = enhance_layer([F, img_feat]).

  Call signature fits `nn.scan`: carry = (E_in (B,S,S,C), previous stage result), broadcast inputs
  (skip source (B,S,S,Cs), MANO pair). Returns (E, result) as the new carry and (result, features)
  as the per-stage output.
  """

  projecter: JointImageRefinement  # scope 'projecter', the reference's attribute name
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
        jnp.concatenate([fused, feats['img_feat'].astype(fused.dtype)], axis=-1), self.train
    )
    self.sow('intermediates', 'enhance_layer_out', enhanced)
    return (enhanced, result), (result, feats)
