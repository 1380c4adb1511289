"""One config tree: dataclass defaults, one YAML file, dotted ``--set section.key=value`` overrides.

The sections, their keys and defaults are in :mod:`pipeline.config_schema`. Every key carries a one-line help
text and, where it has one, an allowed range or set of choices.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from pipeline.config_schema import (  # noqa: F401 - AugmentConfig, TrainConfig: used as config.X
    FORMATS, SECTIONS, AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig)
from pipeline.config_values import coerce as _coerce, type_name as _type_name
from pipeline.errors import ConfigError


SEED_KEYS = ("data.seed", "model.seed", "train.seed")
SEED_MAX = 2**32 - 1  # numpy, TensorFlow and Keras take 32-bit seeds
SQUARE_KEYS = ("data.image_size",)  # a single number n means [n, n]


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata) for f in dataclasses.fields(cls)}


def _check_lists(cfg: Config) -> None:
    """Checks of list values and of keys that depend on each other."""
    size = cfg.data.image_size
    if size and (len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                           for s in size)):
        raise ConfigError(f"data.image_size: expected [] or [height, width] of positive integers, "
                          f"got {size!r}")
    for key, values in (("model.filters", cfg.model.filters), ("model.dense", cfg.model.dense)):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ConfigError(f"{key}: expected a list of positive integers, got {values!r}")
    if not cfg.model.filters and cfg.model.preset in ("small", "conv1d") and not cfg.model.layers:
        raise ConfigError("model.filters: needs at least one conv block")
    _check_model(cfg.model)
    if cfg.model.task != "classify":
        from pipeline import augment_targets

        augment_targets.check(cfg.augment, cfg.model.task)
        if cfg.export.flip_average:
            raise ConfigError(f"export.flip_average: only for model.task: classify (a mirrored "
                              f"{cfg.model.task} output would need mirroring back); got {cfg.model.task}")
    bad = [f for f in cfg.export.formats if f not in FORMATS]
    if bad or not cfg.export.formats:
        raise ConfigError(f"export.formats: {bad or '[]'} not in {', '.join(FORMATS)}")
    if not cfg.data.source.strip():
        raise ConfigError("data.source: must not be empty")
    _check_sources(cfg.data)
    for key in SEED_KEYS:
        section, name = key.split(".")
        seed = getattr(getattr(cfg, section), name)
        if seed > SEED_MAX:
            raise ConfigError(f"{key}: {seed} is above the maximum {SEED_MAX} (seeds are 32-bit)")
    if not cfg.export.dest.strip():
        raise ConfigError("export.dest: must not be empty (the folder bundles are published under, "
                          "e.g. exported)")


def _check_sources(data: DataConfig) -> None:
    """data.source and data.fallback name a known source kind with its argument, whichever stage runs."""
    from pipeline.sources import parse

    parse(data.source)
    if data.audio:
        from pipeline.sources.audio import settings

        settings(data.audio, "data.audio")
    if data.fallback.strip():
        try:
            parse(data.fallback)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("data.source:", "data.fallback:", 1)) from None


def _check_model(m: ModelConfig) -> None:
    """model.layers (names, keys, values of each block), model.budget and the transfer keys."""
    from pipeline.models import spec

    if m.layers:
        spec.normalize(m.layers, "model.layers")
    for key, value in m.budget.items():
        if key not in ("flash_kb", "ram_kb"):
            raise ConfigError(f"model.budget.{key}: unknown key (known: flash_kb, ram_kb)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"model.budget.{key}: expected a positive number of KB, got {value!r}")
    if m.base_model and m.backbone:
        raise ConfigError("model.backbone: set either model.base_model or model.backbone, not both")


PRESET_ONLY = ("preset", "filters", "kernel_size", "strides", "padding", "pool_size", "batch_norm", "dense",
               "width")


def _check_spec_only(given: set, layers: list) -> None:
    """A layer spec replaces the preset, so the preset's own keys beside it would be silently ignored: refuse
    the ``given`` ones: those a --set gives, and those of a file that holds a layer spec too. (A file written
    for a preset, such as configs/default.yaml, may list them: ``--set model.layers=...`` replaces it.)"""
    ignored = [f"model.{key}" for key in PRESET_ONLY if key in given]
    if layers and ignored:
        raise ConfigError(f"{', '.join(ignored)}: no effect when model.layers is given (the layer spec sets "
                          "every block itself): change model.layers, or build the preset instead with "
                          "--set model.layers=[]")


def from_dict(raw: dict | None) -> Config:
    """Build a validated :class:`Config` from a nested mapping (e.g. parsed YAML)."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    kwargs = {}
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
        values = values or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a mapping of keys")
        fields = _fields(SECTIONS[name])
        clean = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(fields)})")
            tp, meta = fields[key]
            if f"{name}.{key}" in SQUARE_KEYS and isinstance(value, int) and not isinstance(value, bool):
                value = [value, value]
            clean[key] = _coerce(f"{name}.{key}", value, tp, meta)
        kwargs[name] = SECTIONS[name](**clean)
    cfg = Config(**kwargs)
    _check_lists(cfg)
    return cfg


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], YAML-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected section.key=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, dict):  # "folder:" or "tfds:mnist" parse as mappings; no key takes one
        value = text
    return parts, value


def load(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    file_model = raw.get("model")
    given = set(file_model) if isinstance(file_model, dict) and file_model.get("layers") else set()
    for item in overrides:
        (section, key), value = parse_override(item)
        if section == "model":
            given.add(key)
        if raw.get(section) is None:
            raw[section] = {}
        if not isinstance(raw[section], dict):
            raise ConfigError(f"{section}: expected a mapping of keys")
        raw[section][key] = value
    cfg = from_dict(raw)
    _check_spec_only(given, cfg.model.layers)
    return cfg


def describe() -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every config key, for docs and ``cnnpipe config``."""
    rows = []
    defaults = Config()
    for name, cls in SECTIONS.items():
        for key, (tp, meta) in _fields(cls).items():
            default = getattr(getattr(defaults, name), key)
            extra = ""
            if meta.get("choices"):
                extra = f" (one of {', '.join(map(str, meta['choices']))})"
            rows.append((f"{name}.{key}", _type_name(tp), repr(default), meta["help"] + extra))
    return rows
