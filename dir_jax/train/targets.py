"""Ground truth for a batch, computed from the MANO parameters on the accelerator.

Map: docs/architecture.md#losses.

The converted dataset stores MANO parameters and intrinsics, not joints or vertices; this module poses
both hands with the ground-truth layer (`gt_mano`, camera frame, metres), projects them with the
batch's intrinsics and returns the targets `losses.dir_losses` expects, plus what the metrics need.
"""

import chex
import jax.numpy as jnp

from dir_jax.mano import ManoPair, gt_mano
from dir_jax.mano.constants import SIDES

# The reference loader's `center_*` is the GT middle-finger MCP (joint 9; docs/quirks.md#q1).
CENTER_JOINT = 9


def project_to_pixels(points_cam_m, intrinsics):
  """(B, N, 3) camera-frame metres, (B, 3, 3) intrinsics -> (B, N, 2) pixels (pixel centres at +0.5)."""
  projected = jnp.einsum('bij,bnj->bni', intrinsics, points_cam_m)
  return projected[..., :2] / projected[..., 2:3]


def ground_truth(batch: dict, mano: ManoPair, image_size: int) -> dict:
  """Targets for one batch.

  Args:
    batch: the input pipeline's batch (`dir_jax.data.input_pipeline`): `intrinsics` (B, 3, 3),
      `mano_<side>_{root_rotmat,hand_pose,betas,trans}`, `seg` (B, H, W) int, `dense` (B, H, W, 3).
    mano: the MANO pair.
    image_size: side of the images the intrinsics belong to (pixels), for uv normalisation.

  Returns:
    `joint_2d_<side>` (B, 21, 3) = (u, v in [-1, 1], z metres), `mesh_2d_<side>` (B, 778, 3),
    `joint_3d_<side>` (B, 21, 3) and `mesh_3d_<side>` (B, 778, 3) camera frame metres,
    `center_<side>` (B, 3) = joint 9, `seg`, `dense` as given.
  """
  intrinsics = batch['intrinsics'].astype(jnp.float32)
  chex.assert_shape(intrinsics, (None, 3, 3))
  targets = {'seg': batch['seg'].astype(jnp.int32), 'dense': batch['dense'].astype(jnp.float32)}
  for side in SIDES:
    verts_cam_m, joints_cam_m = gt_mano(
        mano[side],
        batch[f'mano_{side}_root_rotmat'].astype(jnp.float32),
        batch[f'mano_{side}_hand_pose'],
        batch[f'mano_{side}_betas'],
        batch[f'mano_{side}_trans'],
    )
    for kind, points in (('joint', joints_cam_m), ('mesh', verts_cam_m)):
      uv_norm = 2.0 * project_to_pixels(points, intrinsics) / image_size - 1.0
      targets[f'{kind}_2d_{side}'] = jnp.concatenate([uv_norm, points[..., 2:]], axis=-1)
      targets[f'{kind}_3d_{side}'] = points
    targets[f'center_{side}'] = joints_cam_m[:, CENTER_JOINT]
  return targets
