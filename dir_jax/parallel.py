"""Data parallelism: one mesh axis 'data' over every device of every host, and batches placed on it.

Each process feeds its own share of the global batch; `global_batch` makes the global arrays that the
jit-compiled steps see (BatchNorm statistics over them are global-batch statistics).
"""

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  """One mesh axis 'data' over every device of every host."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their first (batch) axis over the 'data' axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global arrays sharded over the 'data' axis."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
