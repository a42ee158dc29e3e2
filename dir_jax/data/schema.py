"""What one converted example holds: shared by `data_prep` (writer) and `dir_jax.data` (reader).

Pixel convention (everywhere in this project): pixel (col i, row j) covers [i, i+1) x [j, j+1), so its
centre is at (i + 0.5, j + 0.5) in the coordinates that the intrinsics `K` project to. This is the
convention of `grid_sample(align_corners=False)`, of PIL's affine transforms and of our rasterizer.
Raw InterHand2.6M intrinsics follow OpenCV (centre of pixel i at i), so the builder adds 0.5 to the
principal point once, when it reads them. Normalised image coordinates: `uv_norm = 2 * px / 256 - 1`.

Seg labels follow the released checkpoint: its label 1 is the right hand (docs/quirks.md#q26).

Example features (tfds names; `mano/<side>/<key>`):
  image              (256, 256, 3) uint8 RGB, JPEG
  seg                (256, 256, 1) uint8 in {SEG_BACKGROUND, SEG_RIGHT, SEG_LEFT}, PNG
  dense              (256, 256, 3) uint8 = round(255 * normalised template coordinates), PNG; 0 off the hands
  intrinsics         (3, 3) float32, crop intrinsics in the convention above
  mano/<side>/root_rotmat  (3, 3) float32, root rotation in the camera frame
  mano/<side>/hand_pose    (45,) float32, PCA coefficients (IntagHand's `axis2pca` of pose + mean)
  mano/<side>/betas        (10,) float32
  mano/<side>/trans        (3,) float32 metres, camera frame (see `dir_jax.mano.rigid`)
                     (interhand26m's 'all' config: all zero for the hand a single-hand example's
                     hand_type does not name)
  capture, frame     int64; camera   string (e.g. '400262'); image_id int64 (the annotation's id)
  joint_3d_cam_m     (42, 3) float32 metres: InterHand2.6M's triangulated joints (joint_3d.json) in the
                     camera frame of the crop (the crop only changes the intrinsics), InterHand2.6M's
                     order (`INTERHAND_JOINTS`); 0 where not valid
  joint_3d_valid     (42,) bool: data.json's `joint_valid` of the annotation, and false where
                     joint_3d.json has no finite coordinates (the frame missing: all false)
  hand_type          string: data.json's `hand_type` ('right', 'left' or 'interacting')
  hand_type_valid    bool: data.json's `hand_type_valid`
  bbox_px            (4,) float32: data.json's box (x, y, width, height) in the original image's pixels,
                     as the file gives it (OpenCV convention, not the crop's)

Joint orders. DIR's 21 joints (`dir_jax.mano.constants.JOINT_NAMES_21`): wrist, then each finger
from its base to its tip (thumb, index, middle, ring, pinky). InterHand2.6M's 42: the right hand's
21, then the left's; within a hand each finger from its tip to its base (thumb, index, middle, ring,
pinky), then the wrist. `INTERHAND_FROM_DIR[i]` is the DIR index of a hand's InterHand joint i;
`DIR_FROM_INTERHAND[d]` the InterHand index (within the hand's block of 21) of DIR joint d.
"""

IMAGE_SIZE = 256
SIDES = ('left', 'right')
SEG_BACKGROUND = 0
SEG_RIGHT = 1
SEG_LEFT = 2
SEG_LABEL = {'right': SEG_RIGHT, 'left': SEG_LEFT}
MANO_KEYS = ('root_rotmat', 'hand_pose', 'betas', 'trans')
MANO_SHAPES = {'root_rotmat': (3, 3), 'hand_pose': (45,), 'betas': (10,), 'trans': (3,)}

HAND_TYPES = ('right', 'left', 'interacting')  # data.json's `hand_type` values
INTERHAND_NUM_JOINTS = 42
INTERHAND_HAND_OFFSET = {'right': 0, 'left': 21}  # first index of each hand's block of 21 joints
INTERHAND_FROM_DIR = tuple(1 + 4 * finger + 3 - k for finger in range(5) for k in range(4)) + (0,)
DIR_FROM_INTERHAND = tuple(INTERHAND_FROM_DIR.index(d) for d in range(21))


def interhand_joints_in_dir_order(joints, side: str):
  """One hand's 21 joints of InterHand2.6M's 42 in DIR's order.

  Args:
    joints: (..., 42, K) array (coordinates, or validity with K = 1, in InterHand2.6M's order).
    side: 'left' or 'right'.

  Returns:
    (..., 21, K) the same array type, rows in DIR's 21-joint order.
  """
  if side not in INTERHAND_HAND_OFFSET:
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  rows = [INTERHAND_HAND_OFFSET[side] + i for i in DIR_FROM_INTERHAND]
  return joints[..., rows, :]
