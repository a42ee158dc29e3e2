"""MANO hand model: assets (official pickles or npz) and the JAX layers DIR uses."""

from dir_jax.mano.asset import ManoAsset, ManoAssetError, ManoPair, fix_left_shapedirs, load_mano, load_mano_pair
from dir_jax.mano.layer import axis_angle_to_pca, gt_mano, network_mano, pca_to_axis_angle, skin_single
from dir_jax.mano.safe_pickle import UnsafePickleError
