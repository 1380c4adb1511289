"""Shared fixtures: tiny configs, isolated run folders and a CLI runner that calls `cnnpipe` in-process."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"

# A small, fast variant of the default: a few epochs of a narrow CNN on the bundled digits.
TINY = [
    "--set", "model.filters=[8, 16]", "--set", "model.dense=[32]",
    "--set", "train.epochs=4", "--set", "train.batch_size=32", "--set", "train.warmup_epochs=0",
    "--set", "train.verbose=0",
    "--set", "export.representative_samples=100", "--set", "export.golden_vectors=4",
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder; runs/ and exported/ are created inside it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(args, **kw):
    """Run `cnnpipe ARGS` in-process; return click's Result (exit_code, output)."""
    from tasks.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def invoke_in(folder, args, **kw):
    """``invoke`` with ``folder`` as the working directory (for session and module fixtures, which cannot use
    monkeypatch.chdir); the previous directory is restored."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return invoke(args, **kw)
    finally:
        os.chdir(cwd)


def tensorflow_free_env(tmp_path, *, block_pipeline: bool = True) -> dict:
    """Environment whose Python cannot import tensorflow or keras (nor, with ``block_pipeline``, this
    project's packages): what a device with only the bundle's requirements has."""
    blocker = Path(tmp_path) / "blocker"
    for name in ("tensorflow", "keras") + (("pipeline", "tasks") if block_pipeline else ()):
        (blocker / name).mkdir(parents=True, exist_ok=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    path = [str(blocker)] + ([] if block_pipeline else [str(REPO)])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "TF_CPP_MIN_LOG_LEVEL": "2"}


def one_line_error(result, code, *needles):
    """The command failed with ``code`` and one ``error:`` line holding every needle, no traceback;
    returns it."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny run through every stage, shared by the tests that only read its outputs."""
    root = tmp_path_factory.mktemp("tiny")
    result = invoke_in(root, ["run", "--config", DEFAULT_CONFIG, "--run", "tiny", *TINY])
    assert result.exit_code == 0, result.output
    return {"root": root, "run": root / "runs" / "tiny", "exported": root / "exported" / "tiny",
            "output": result.output}


@pytest.fixture(scope="session")
def tiny_models():
    """A tiny digits CNN and its .tflite files in every mode (tests/edge_models.py)."""
    from edge_models import build_tiny_models

    return build_tiny_models()


@pytest.fixture
def own_run(tiny_run, tmp_path, monkeypatch):
    """A copy of the shared tiny run (trained once) as run ``mine`` in this test's own folder, the working
    folder; returns the options that address it."""
    shutil.copytree(tiny_run["run"], tmp_path / "runs" / "mine")
    monkeypatch.chdir(tmp_path)
    return ["--config", DEFAULT_CONFIG, "--run", "mine", *TINY]


def file_hashes(root: Path, skip: tuple = ()) -> dict:
    """{path relative to ``root``: SHA-256} of every file under ``root`` whose name is not in ``skip``; {}
    when ``root`` does not exist. Tests compare two of these to show a command changed nothing."""
    from pipeline import artifacts

    root = Path(root)
    return {p.relative_to(root).as_posix(): artifacts.sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip} if root.exists() else {}
