"""Command-line defaults never execute files of the current folder."""

import os
import subprocess
import sys

from configs import DEFAULT_CONFIG

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_config_lives_in_the_package():
  assert os.path.isabs(DEFAULT_CONFIG) and os.path.isfile(DEFAULT_CONFIG)
  assert os.path.dirname(DEFAULT_CONFIG) == os.path.join(REPO_ROOT, 'configs')


def test_evaluate_without_config_ignores_a_configs_folder_in_the_working_directory(tmp_path):
  planted = tmp_path / 'configs'
  planted.mkdir()
  marker = tmp_path / 'planted_config_ran'
  (planted / 'dir_reference.py').write_text(
      f'open({str(marker)!r}, "w").close()\n' 'def get_config():\n  raise SystemExit(3)\n'
  )
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, 'evaluate.py'), f'--checkpoint={tmp_path / "none"}'],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert not marker.exists()
  assert result.returncode != 0 and 'none' in result.stderr  # it got as far as the missing checkpoint
