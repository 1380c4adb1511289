"""Options shared by every stage command and the context they resolve to."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

DEFAULT_CONFIG = Path("configs/default.yaml")


@dataclass
class Context:
    cfg: object          # pipeline.config.Config
    run: str
    runs_root: Path
    config_path: Path | None

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.run

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


def stage_options(func):
    """--config FILE, --run NAME, --set section.key=value (repeatable), --runs-dir DIR."""
    @click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="YAML config file (default: configs/default.yaml when present, "
                       "else built-in defaults).")
    @click.option("--run", "run", default=None, metavar="NAME",
                  help="Run name: files go to runs/NAME/ (default: the config file's name).")
    @click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one config key; repeatable, e.g. --set train.epochs=5.")
    @click.option("--runs-dir", "runs_dir", type=click.Path(file_okay=False, path_type=Path),
                  default=Path("runs"), show_default=True, help="Folder holding the run folders.")
    @functools.wraps(func)
    def wrapper(config, run, sets, runs_dir, **kwargs):
        ctx = load_context(config, run, sets, runs_dir)
        return func(ctx, **kwargs)
    return wrapper


def load_context(config: Path | None, run: str | None, sets=(), runs_dir: Path = Path("runs")) -> Context:
    from pipeline import config as config_mod
    from pipeline.errors import ConfigError

    from tasks import progress

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    cfg = config_mod.load(config, list(sets))
    name = run if run is not None else (Path(config).stem if config else "default")
    if not name.strip() or "/" in name or "\\" in name or name.startswith(".") or "\n" in name:
        raise ConfigError(f"--run {name!r}: a run name is a plain, non-empty folder name")
    progress.install()
    overrides = f" with {len(sets)} --set override{'s' if len(sets) != 1 else ''}" if sets else ""
    echo(f"config: {config if config else 'built-in defaults'}{overrides}")
    return Context(cfg=cfg, run=name, runs_root=Path(runs_dir), config_path=config)


def echo(msg: str = "", **kw) -> None:
    click.echo(msg, **kw)
