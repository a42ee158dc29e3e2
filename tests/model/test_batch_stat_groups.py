"""BatchNorm statistics over groups of rows (`layers.batch_stat_groups`, `config.batch_norm_group_rows`):
each group normalised as its own batch, running statistics from the groups' mean, and, with the batch
sharded over devices, no all-reduce of BatchNorm statistics when the groups are the devices' rows."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dir_jax.model import layers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOMENTUM = 0.9  # layers.BatchNorm: running = 0.9 running + 0.1 batch


def _apply(x, rows=None):
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, train=True)
  if rows is None:
    return bn.apply(variables, x, train=True, mutable=['batch_stats'])
  with layers.batch_stat_groups(rows):
    return bn.apply(variables, x, train=True, mutable=['batch_stats'])


@pytest.mark.parametrize('shape', [(8, 5, 5, 3), (8, 21, 4)], ids=['2d', '1d'])
def test_each_group_is_normalised_as_its_own_batch(shape):
  x = jax.random.normal(jax.random.PRNGKey(1), shape) * 3.0 + jnp.arange(shape[0]).reshape(
      (-1,) + (1,) * (len(shape) - 1)
  )
  rows = 2
  y, updates = _apply(x, rows)
  separately = [_apply(x[i : i + rows]) for i in range(0, shape[0], rows)]
  np.testing.assert_allclose(y, jnp.concatenate([out for out, _ in separately]), rtol=1e-6, atol=1e-6)
  # Running statistics: one momentum step with the mean of the groups' (unbiased) statistics.
  stats = [upd['batch_stats'] for _, upd in separately]
  for name, initial in (('mean', 0.0), ('var', 1.0)):
    groups_batch = np.mean([(s[name] - MOMENTUM * initial) / (1 - MOMENTUM) for s in stats], axis=0)
    expected = MOMENTUM * initial + (1 - MOMENTUM) * groups_batch
    np.testing.assert_allclose(updates['batch_stats'][name], expected, rtol=1e-5, atol=1e-6)
  # Not the whole batch's statistics: the rows' offsets differ between groups.
  whole, _ = _apply(x)
  assert not np.allclose(y, whole, atol=1e-3)


def test_no_groups_and_one_group_are_the_whole_batch():
  x = jax.random.normal(jax.random.PRNGKey(2), (6, 4, 4, 5))
  whole, whole_stats = _apply(x)
  for rows in (0, 6):
    y, stats = _apply(x, rows)
    np.testing.assert_array_equal(y, whole)
    jax.tree.map(np.testing.assert_array_equal, stats, whole_stats)


def test_eval_mode_ignores_the_groups():
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 3, 2))
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, train=False)
  with layers.batch_stat_groups(2):
    grouped = bn.apply(variables, x, train=False)
  np.testing.assert_array_equal(grouped, bn.apply(variables, x, train=False))


def test_groups_that_do_not_split_the_batch_are_refused():
  x = jnp.ones((8, 2, 2, 3))
  with pytest.raises(ValueError, match='does not split into groups of 3'):
    _apply(x, 3)
  with pytest.raises(ValueError, match='must be >= 0'):
    with layers.batch_stat_groups(-1):
      pass


_SHARDED_SCRIPT = textwrap.dedent("""
    import json
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from dir_jax.model import layers

    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        for width in (8, 8):
          x = nn.relu(layers.BatchNorm()(nn.Conv(width, (3, 3))(x), train=True))
        return jnp.mean(x ** 2)

    net = Net()
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 3))
    variables = net.init(jax.random.PRNGKey(1), x)

    def loss(params, batch_stats, x, rows):
      with layers.batch_stat_groups(rows):
        out, updates = net.apply({'params': params, 'batch_stats': batch_stats}, x, mutable=['batch_stats'])
      return out, updates['batch_stats']

    mesh = Mesh(np.array(jax.devices()), ('data',))
    replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec('data'))
    result = {}
    for rows in (0, 2):
      step = jax.jit(
          jax.value_and_grad(lambda p, s, x: loss(p, s, x, rows), has_aux=True),
          in_shardings=(replicated, replicated, sharded), out_shardings=replicated,
      )
      args = (variables['params'], variables['batch_stats'], jax.device_put(x, sharded))
      hlo = step.lower(*args).compile().as_text()
      (value, stats), grads = step(*args)
      (one_value, one_stats), one_grads = jax.jit(jax.value_and_grad(lambda p, s, x: loss(p, s, x, rows), has_aux=True))(
          variables['params'], variables['batch_stats'], x)
      result[rows] = {
          'all_reduces': hlo.count(' all-reduce('),
          'loss': [float(value), float(one_value)],
          'max_grad_diff': max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(one_grads))),
          'max_stats_diff': max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(one_stats))),
      }
    print('RESULT', json.dumps(result))
    """)


def test_per_device_groups_need_no_batch_norm_all_reduce_and_match_one_device():
  """8 fake devices, 2 rows each: with groups of 2 rows the compiled step all-reduces only the gradients
  and the running statistics (none per BatchNorm forward or backward), and computes what one device does."""
  env = dict(
      os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=8'
  )
  run = subprocess.run(
      [sys.executable, '-c', _SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
  )
  assert run.returncode == 0, run.stderr[-3000:]
  result = {int(k): v for k, v in json.loads(run.stdout.split('RESULT ', 1)[1]).items()}
  for rows in (0, 2):
    sharded_loss, one_device_loss = result[rows]['loss']
    np.testing.assert_allclose(sharded_loss, one_device_loss, rtol=1e-5)
    assert result[rows]['max_grad_diff'] < 1e-4 and result[rows]['max_stats_diff'] < 1e-5, result
  assert result[2]['all_reduces'] < result[0]['all_reduces'], result
