"""absl flags for the tools that are also libraries: predict, demo, the converters, data_prep, tools/, bench/.

train.py and evaluate.py define their flags on absl's global `flags.FLAGS`: each is alone in its process. The
other tools are imported as libraries too, several in one process (the tests; `dir_jax.demo` imports
`dir_jax.predict`), and they share flag names (`--out`, `--checkpoint`, `--mano_dir`), which the global FLAGS would
refuse to define twice (DuplicateFlagError). So each of them defines its flags on a module-level
`FLAGS = flags.FlagValues()` of its own, with `flag_values=FLAGS` on every DEFINE, and reads them in `main`:

  FLAGS = flags.FlagValues()
  flags.DEFINE_string('out', None, 'output folder', flag_values=FLAGS, required=True)

  def main(argv: Sequence[str]) -> int:
    cli.parse(FLAGS, argv, __doc__)  # argv[0] is the program, as app.run passes it
    ... FLAGS.out ...

  if __name__ == '__main__':
    cli.run(main)

Python code (the tests) runs a tool with `main(['predict', '--out=x', ...])`. Importing no JAX here keeps the
torch-only tools (`tools/`) free of it.
"""

import os
import sys
import textwrap
from typing import Callable, NoReturn, Sequence

from absl import app, flags

HELP_ARGS = ('-h', '-?', '--help', '--helpshort', '--helpfull')
USAGE_EXIT_STATUS = 2  # a bad command line; 1 stays free for the tools' own failures (predict: an image failed)


def parse(flag_values: flags.FlagValues, argv: Sequence[str], doc: str | None = None) -> None:
  """Parses a command line into a tool's own flags; exits on --help or a bad command line.

  Flags not given take their defaults, also when `flag_values` was parsed before (a second `main` call).

  Args:
    flag_values: the tool's `flags.FlagValues`.
    argv: the command line, argv[0] the program (`app.run` passes sys.argv).
    doc: what --help prints above the flags (the tool's module docstring).

  Raises:
    SystemExit: 0 after --help (or -h, --helpfull) has printed `doc` and the flags to stdout; USAGE_EXIT_STATUS
      after an unknown flag, a refused value, a missing required flag or a positional argument, with the error
      on stderr.
  """
  argv = list(argv)
  options = argv[1 : argv.index('--', 1)] if '--' in argv[1:] else argv[1:]
  if any(arg in HELP_ARGS for arg in options):
    print(help_text(flag_values, doc))
    raise SystemExit(0)
  flag_values.unparse_flags()  # back to the defaults, also after a parse that failed half-way
  try:
    rest = flag_values(argv)
  except flags.Error as e:
    usage_error(str(e), argv)
  if rest[1:]:
    usage_error(
        f'unexpected arguments {rest[1:]}: every input is a flag, --name=value or --name value '
        '(a list is one comma-separated value)',
        argv,
    )


def help_text(flag_values: flags.FlagValues, doc: str | None = None) -> str:
  """`doc` and the flags of `flag_values` (no --flagfile/--undefok)."""
  flags_help = flag_values.get_help(prefix='  ', include_special_flags=False)
  return '\n\n'.join(part.strip('\n') for part in (doc, 'flags:\n' + flags_help.strip('\n')) if part)


def usage_error(message: str, argv: Sequence[str] = ()) -> NoReturn:
  """Prints a command-line error as absl's app.run does (`FATAL Flags parsing error: ...`) and exits."""
  if '\n' in message:
    message = '\n' + textwrap.indent(message, '  ')
  program = os.path.basename(argv[0]) if argv else 'the tool'
  sys.stderr.write(f'FATAL Flags parsing error: {message}\nPass --help to see the flags of {program}.\n')
  raise SystemExit(USAGE_EXIT_STATUS)


def run(main: Callable[[list[str]], int | None]) -> None:
  """`app.run(main)` for a tool with its own flags: `main(sys.argv)` parses them; its return value is the exit
  status. absl's global flags (logging, --pdb, ...) are not parsed and keep their defaults, absl logging at
  WARNING, so the tool prints what it printed before absl."""
  app.run(main, flags_parser=_global_flags_unparsed)


def _global_flags_unparsed(argv: list[str]) -> list[str]:
  flags.FLAGS.mark_as_parsed()  # app.run requires it; the command line belongs to the tool's own flags
  flags.FLAGS.verbosity = -1  # WARNING: app.run would raise an unset verbosity to INFO (orbax's INFO lines)
  return argv
