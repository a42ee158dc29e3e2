"""Fixed tables of the MANO hand model as DIR uses it (docs/quirks.md#q22).

MANO's own 16 joints: 0 wrist; 1-3 index; 4-6 middle; 7-9 pinky; 10-12 ring; 13-15 thumb.
DIR's 21-joint order: 0 wrist; 1-4 thumb; 5-8 index; 9-12 middle; 13-16 ring; 17-20 pinky
(each finger from its base joint to its tip).
"""

from dir_jax.data.schema import SIDES  # ('left', 'right'), named once; re-exported for the MANO side

NUM_VERTS = 778
NUM_FACES = 1538
NUM_MANO_JOINTS = 16
NUM_JOINTS = 21
NUM_BETAS = 10
NUM_PCA = 45

# Parent of each MANO joint; -1 for the root. The official kintree_table stores 2**32 - 1 for it.
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
KINTREE_ROOT_UINT32 = 4294967295

# Fingertip vertices appended as joints 16..20 (thumb, index, middle, ring, pinky).
# The network's layer (vendored manopth) uses 445 for the left middle finger (docs/quirks.md#q20);
# the ground-truth layer and the evaluation regressor use 444 for both hands.
TIP_VERTS_RIGHT = (745, 317, 444, 556, 673)
TIP_VERTS_LEFT = (745, 317, 445, 556, 673)
TIP_VERTS_GT = (745, 317, 444, 556, 673)

# Index into [16 MANO joints, 5 tips] that gives DIR's 21-joint order.
REORDER_TO_21 = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# Parent of each joint in the 21-joint order (the 20 bones of the bone projection,
# docs/architecture.md#image-space-projection).
PARENTS_21 = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)

JOINT_NAMES_21 = (
    'wrist',
    'thumb1',
    'thumb2',
    'thumb3',
    'thumb_tip',
    'index1',
    'index2',
    'index3',
    'index_tip',
    'middle1',
    'middle2',
    'middle3',
    'middle_tip',
    'ring1',
    'ring2',
    'ring3',
    'ring_tip',
    'pinky1',
    'pinky2',
    'pinky3',
    'pinky_tip',
)


def network_tip_verts(side: str) -> tuple[int, ...]:
  """Fingertip vertex ids of the network's MANO layer for `side` ('left' or 'right')."""
  if side not in SIDES:
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  return TIP_VERTS_LEFT if side == 'left' else TIP_VERTS_RIGHT
