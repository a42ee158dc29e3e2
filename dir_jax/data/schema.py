"""What one converted example holds: shared by `data_prep` (writer) and `dir_jax.data` (reader).

Pixel convention (everywhere in this project): pixel (col i, row j) covers [i, i+1) x [j, j+1), so its
centre is at (i + 0.5, j + 0.5) in the coordinates that the intrinsics `K` project to. This is the
convention of `grid_sample(align_corners=False)`, of PIL's affine transforms and of our rasterizer.
Raw InterHand2.6M intrinsics follow OpenCV (centre of pixel i at i), so the builder adds 0.5 to the
principal point once, when it reads them. Normalised image coordinates: `uv_norm = 2 * px / 256 - 1`.

Seg labels follow the released checkpoint (spec §12: its mask channel 1 carries the right hand).

Example features (tfds names; `mano/<side>/<key>`):
  image              (256, 256, 3) uint8 RGB, JPEG
  seg                (256, 256, 1) uint8 in {SEG_BACKGROUND, SEG_RIGHT, SEG_LEFT}, PNG
  dense              (256, 256, 3) uint8 = round(255 * normalised template coordinates), PNG; 0 off the hands
  intrinsics         (3, 3) float32, crop intrinsics in the convention above
  mano/<side>/root_rotmat  (3, 3) float32, root rotation in the camera frame
  mano/<side>/hand_pose    (45,) float32, PCA coefficients (IntagHand's `axis2pca` of pose + mean)
  mano/<side>/betas        (10,) float32
  mano/<side>/trans        (3,) float32 metres, camera frame (see `dir_jax.mano.rigid`)
  capture, frame     int64; camera   string (e.g. '400262'); image_id int64 (the annotation's id)
"""

IMAGE_SIZE = 256
SIDES = ('left', 'right')
SEG_BACKGROUND = 0
SEG_RIGHT = 1
SEG_LEFT = 2
SEG_LABEL = {'right': SEG_RIGHT, 'left': SEG_LEFT}
MANO_KEYS = ('root_rotmat', 'hand_pose', 'betas', 'trans')
MANO_SHAPES = {'root_rotmat': (3, 3), 'hand_pose': (45,), 'betas': (10,), 'trans': (3,)}
