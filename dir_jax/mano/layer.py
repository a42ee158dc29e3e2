"""The MANO layer in JAX: per-example forward functions, vmapped over the batch.

Two variants, as the reference uses them (docs/architecture.md#mano-layer):
- `network_mano`: the layer inside DIR (vendored manopth): 6D robust root rotation, 45 PCA
  coefficients added to the mean pose (`flat_hand_mean=False`), 10 betas, fingertips by side, output
  centred at a joint.
- `gt_mano`: the ground-truth/evaluation layer (IntagHand's): root rotation matrix, PCA or
  axis-angle hand pose, betas, optional centring, scale and translation; fingertip 444 for both hands.

All outputs are metres (no x1000), 21 joints in DIR's order (`constants.JOINT_NAMES_21`). The functions
are pure and jit-able (`center_idx` and `pose_is_pca` must be static).
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from dir_jax.mano import constants
from dir_jax.mano import rotation
from dir_jax.mano.asset import ManoAsset

_HIGHEST = jax.lax.Precision.HIGHEST


def cast_asset(asset: ManoAsset, dtype) -> ManoAsset:
  """The asset with its floating-point arrays in `dtype` (faces unchanged)."""
  return jax.tree.map(
      lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, asset
  )


def skin_single(asset: ManoAsset, rotmats, betas):
  """Linear blend skinning for one hand.

  Args:
    asset: the hand model.
    rotmats: (16, 3, 3) local rotations, joint 0 = global root rotation (about the rest wrist).
    betas: (10,) shape coefficients.

  Returns:
    verts: (778, 3) posed vertices, metres, in the frame where the rest wrist stays in place.
    joints: (16, 3) posed MANO joints (translations of the global joint transforms).
  """
  v_shaped = asset.v_template + jnp.einsum('vcb,b->vc', asset.shapedirs, betas, precision=_HIGHEST)
  j_rest = jnp.einsum('jv,vc->jc', asset.J_regressor, v_shaped, precision=_HIGHEST)
  eye = jnp.eye(3, dtype=rotmats.dtype)
  pose_feature = (rotmats[1:] - eye).reshape(-1)
  v_posed = v_shaped + jnp.einsum('vcp,p->vc', asset.posedirs, pose_feature, precision=_HIGHEST)

  # Global transforms along the kinematic chain: G_j = G_parent @ [R_j | J_j - J_parent].
  glob_rot = [rotmats[0]]
  glob_t = [j_rest[0]]
  for j in range(1, constants.NUM_MANO_JOINTS):
    p = constants.MANO_PARENTS[j]
    glob_rot.append(jnp.matmul(glob_rot[p], rotmats[j], precision=_HIGHEST))
    glob_t.append(jnp.matmul(glob_rot[p], j_rest[j] - j_rest[p], precision=_HIGHEST) + glob_t[p])
  glob_rot = jnp.stack(glob_rot)
  joints = jnp.stack(glob_t)

  # Remove the rest pose: a vertex at the rest joint moves with that joint.
  skin_t = joints - jnp.einsum('jab,jb->ja', glob_rot, j_rest, precision=_HIGHEST)
  vert_rot = jnp.einsum('vj,jab->vab', asset.weights, glob_rot, precision=_HIGHEST)
  vert_t = jnp.einsum('vj,ja->va', asset.weights, skin_t, precision=_HIGHEST)
  verts = jnp.einsum('vab,vb->va', vert_rot, v_posed, precision=_HIGHEST) + vert_t
  return verts, joints


def _joints_21(verts, joints16, tip_verts):
  """Appends the fingertip vertices and reorders to DIR's 21-joint order."""
  joints = jnp.concatenate([joints16, verts[jnp.asarray(tip_verts)]], axis=0)
  return joints[jnp.asarray(constants.REORDER_TO_21)]


def pca_to_axis_angle(asset: ManoAsset, pca):
  """(..., n) PCA coefficients -> (..., 45) axis-angle of joints 1..15 (mean pose added)."""
  n = pca.shape[-1]
  return asset.hands_mean + jnp.matmul(pca, asset.hands_components[:n], precision=_HIGHEST)


def axis_angle_to_pca(asset: ManoAsset, hand_pose_aa):
  """(..., 45) axis-angle of joints 1..15 -> (..., 45) PCA coefficients (IntagHand's `axis2pca`)."""
  inv = jnp.linalg.inv(asset.hands_components.astype(jnp.float32)).astype(hand_pose_aa.dtype)
  return jnp.matmul(hand_pose_aa - asset.hands_mean, inv, precision=_HIGHEST)


def _network_single(asset, mano_pose, betas, center_idx):
  root = rotation.rot6d_to_matrix(mano_pose[:6])
  hand_aa = pca_to_axis_angle(asset, mano_pose[6:]).reshape(15, 3)
  local = jax.vmap(rotation.axis_angle_to_matrix_quat)(hand_aa)
  verts, joints16 = skin_single(asset, jnp.concatenate([root[None], local]), betas)
  joints = _joints_21(verts, joints16, constants.network_tip_verts(asset.side))
  if center_idx is not None:
    center = joints[center_idx]
    verts, joints = verts - center, joints - center
  return verts, joints


def network_mano(asset: ManoAsset, mano_pose, betas, center_idx: Optional[int] = 0):
  """DIR's MANO layer (the reference's vendored manopth) for a batch.

  Args:
    asset: the hand model (left fix already applied, see `load_mano_pair`).
    mano_pose: (B, 51) = [6D root rotation, 45 PCA coefficients].
    betas: (B, 10).
    center_idx: joint (21-joint order) subtracted from joints and vertices; None = no centring.

  Returns:
    verts: (B, 778, 3) metres. joints: (B, 21, 3) metres.
  """
  chex.assert_rank([mano_pose, betas], 2)
  chex.assert_axis_dimension(mano_pose, 1, 6 + constants.NUM_PCA)
  chex.assert_axis_dimension(betas, 1, constants.NUM_BETAS)
  asset = cast_asset(asset, mano_pose.dtype)
  return jax.vmap(_network_single, in_axes=(None, 0, 0, None))(
      asset, mano_pose, betas.astype(mano_pose.dtype), center_idx
  )


def _gt_single(asset, root_rotmat, hand_pose, betas, trans, scale, pose_is_pca, center_idx):
  hand_aa = pca_to_axis_angle(asset, hand_pose) if pose_is_pca else hand_pose
  local = jax.vmap(rotation.axis_angle_to_matrix)(hand_aa.reshape(15, 3))
  verts, joints16 = skin_single(asset, jnp.concatenate([root_rotmat[None], local]), betas)
  joints = _joints_21(verts, joints16, constants.TIP_VERTS_GT)
  if center_idx is not None:
    center = joints[center_idx]
    verts, joints = verts - center, joints - center
  return verts * scale + trans, joints * scale + trans


def gt_mano(
    asset: ManoAsset,
    root_rotmat,
    hand_pose,
    betas,
    trans=None,
    scale=None,
    pose_is_pca: bool = True,
    center_idx: Optional[int] = None,
):
  """The ground-truth MANO layer (IntagHand's `models/manolayer.py`) for a batch.

  Args:
    asset: the hand model (left fix already applied).
    root_rotmat: (B, 3, 3) global root rotation about the rest wrist.
    hand_pose: (B, 45) PCA coefficients (`pose_is_pca`) or axis-angle of joints 1..15 (radians).
    betas: (B, 10).
    trans: (B, 3) metres added last, or None.
    scale: (B,) multiplier applied after centring, or None.
    pose_is_pca: how to read `hand_pose`.
    center_idx: joint (21-joint order) subtracted before scale and translation; None = none.

  Returns:
    verts: (B, 778, 3) metres. joints: (B, 21, 3) metres.
  """
  chex.assert_shape(root_rotmat, (None, 3, 3))
  chex.assert_rank([hand_pose, betas], 2)
  dtype = root_rotmat.dtype
  batch = root_rotmat.shape[0]
  trans = jnp.zeros((batch, 3), dtype) if trans is None else trans.astype(dtype)
  scale = jnp.ones((batch,), dtype) if scale is None else scale.astype(dtype)
  asset = cast_asset(asset, dtype)
  return jax.vmap(_gt_single, in_axes=(None, 0, 0, 0, 0, 0, None, None))(
      asset, root_rotmat, hand_pose.astype(dtype), betas.astype(dtype), trans, scale, pose_is_pca, center_idx
  )
