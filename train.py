"""Trains DIR: `python train.py --config=configs/dir_reference.py --workdir=runs/exp1 [--config.x=y ...]`.

Multi-host (TPU pods, GPU clusters): run the same command on every host with `--multihost`;
`jax.distributed.initialize()` then finds the coordinator itself on TPU pods and under SLURM/Open MPI,
or takes `--coordinator_address=host:port --num_processes=N --process_id=i` explicitly. Every process
reads its own share of the data and the global batch is `config.batch_size`.
A run resumes from the newest checkpoint in `--workdir` and saves one on SIGTERM (preemption).
"""

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_string('workdir', None, 'checkpoints, TensorBoard events and metrics go here', required=True)
flags.DEFINE_bool('multihost', False, 'call jax.distributed.initialize() before anything else')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (implies --multihost)')
flags.DEFINE_integer('num_processes', None, 'number of processes (with --coordinator_address)')
flags.DEFINE_integer('process_id', None, 'this process (with --coordinator_address)')
config_flags.DEFINE_config_file('config', None, 'experiment config file (configs/*.py)', lock_config=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel

  if FLAGS.multihost or FLAGS.coordinator_address:
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes, process_id=FLAGS.process_id
    )
  from dir_jax.train import trainer  # pylint: disable=import-outside-toplevel

  trainer.quiet_library_logs()
  logging.info(
      'process %d/%d, %d local / %d global devices',
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main)
