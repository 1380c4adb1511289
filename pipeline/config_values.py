"""How one config value is checked against its field's type, choices and bounds, and converted where that is
lossless (``1e-3`` read as text by YAML 1.1 becomes a float, a bare on/off a choice, a scalar a list)."""
from __future__ import annotations

import math
import re
from typing import Any

import yaml

from pipeline.errors import ConfigError

FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(key: str, value: Any, tp, meta: dict):
    """Check ``value`` against the field type and bounds; return it converted where that is lossless."""
    if tp is bool:
        if isinstance(value, bool):
            out = value
        else:
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        out = value
    elif tp is float:
        if isinstance(value, str) and FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        out = float(value)
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif tp is str:
        choices = meta.get("choices") or []
        if isinstance(value, bool) and "on" in choices:  # YAML reads a bare on/off as true/false
            value = "on" if value else "off"
        if meta.get("int_ok") and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        out = value
    elif tp is list:
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        out = value
    elif tp is dict:
        if isinstance(value, str):  # --set section.key='{a: 1}' arrives as text
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                pass
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        out = value
    else:  # pragma: no cover - every field uses one of the types above
        raise ConfigError(f"{key}: unsupported type {type_name(tp)}")
    choices = meta.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: {out!r} is not one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and out < lo:
        raise ConfigError(f"{key}: {out!r} is below the minimum {lo}")
    if hi is not None and out > hi:
        raise ConfigError(f"{key}: {out!r} is above the maximum {hi}")
    return out
