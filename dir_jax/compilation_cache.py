"""JAX's persistent compilation cache for the command-line tools: a second run loads what the first compiled.

`configure(flag_value)` takes a tool's `--compilation_cache` value: None = `default_cache_dir()`
($XDG_CACHE_HOME/dir_jax/jax_cache, else ~/.cache/dir_jax/jax_cache), '' = off, else that folder.
Call it before anything is compiled: JAX opens the cache at the first compilation of the process and
keeps it. A cached program is read back without checks and run, so the folder must be writable only
by you (the warning of JAX's `set_cache_dir`).
"""

import os

import jax

CACHE_SUBDIR = os.path.join('dir_jax', 'jax_cache')
# Programs that compile faster than this are not stored: recompiling them costs about as much as a
# cache read (JAX's own default threshold).
MIN_COMPILE_TIME_S = 1.0
MIN_ENTRY_SIZE_BYTES = 0  # no size floor: the compile-time threshold already leaves out small programs


class CompilationCacheError(OSError):
  """The cache folder cannot be created; the message names it and what to do."""


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/dir_jax/jax_cache, or ~/.cache/dir_jax/jax_cache when XDG_CACHE_HOME is unset."""
  cache_home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(cache_home, CACHE_SUBDIR)


def configure(cache_dir: str | None, flag: str = '--compilation_cache') -> str | None:
  """Points JAX's persistent compilation cache at `cache_dir`; returns the absolute folder, or None when off.

  Args:
    cache_dir: a folder (created if missing); None = `default_cache_dir()`; '' = no persistent cache.
    flag: the command-line flag that gave `cache_dir`, named in errors.

  Raises:
    CompilationCacheError: the folder cannot be created.
  """
  if cache_dir == '':
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  path = os.path.abspath(os.path.expanduser(default_cache_dir() if cache_dir is None else cache_dir))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise CompilationCacheError(
        f'cannot create the compilation cache folder {path} ({e}); give {flag} with a '
        f"writable folder, or {flag} '' to run without a persistent cache"
    ) from e
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_S)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', MIN_ENTRY_SIZE_BYTES)
  return path
