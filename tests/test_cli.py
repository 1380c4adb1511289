"""The command group: every command answers --help, and --help stays fast (no TensorFlow import)."""
import subprocess
import sys

import pytest

from conftest import REPO, invoke
from tasks.cli import COMMANDS


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    result = invoke([name, "--help"])
    assert result.exit_code == 0
    assert (result.output.startswith(f"Usage: cli {name}")
            or result.output.startswith(f"Usage: cnnpipe {name}"))


def test_group_help_lists_every_command():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_help_does_not_import_tensorflow():
    code = ("import sys; from tasks.cli import cli\n"
            "try:\n    cli(['--help'], prog_name='cnnpipe')\nexcept SystemExit:\n    pass\n"
            "for name in ['train', 'export', 'predict']:\n"
            "    try:\n        cli([name, '--help'], prog_name='cnnpipe')\n"
            "    except SystemExit:\n        pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
