"""dir_jax: a JAX/Flax reimplementation of DIR (ICCV 2023) for two interacting hands."""
