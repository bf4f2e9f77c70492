"""The promising subspace as a file: CONFIGS.json is a JSON list of configurations, each a
list of pruning rates in unit order (the paper's format). Parsing is strict because every
later step (blocks, assembly, exploration) indexes units by position: a ragged row or a rate
of 1.0 would surface much later as a confusing failure, so it is rejected here with one line
that names the row and the rate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from onnxwootz.core.errors import BadSpecError


def load_configs(path: str | Path, n_units: int | None = None) -> list[list[float]]:
    """Read and validate CONFIGS.json; `n_units` (when the model is known) fixes the row length."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadSpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadSpecError(f"{path}: cannot be read ({exc})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadSpecError(f"{path} is not valid JSON: {exc}") from None
    return validate_configs(obj, n_units, source=str(path))


def validate_configs(obj: Any, n_units: int | None = None, source: str = "configurations") -> list[list[float]]:
    """Check a parsed configuration list and return it as plain floats (rows numbered from 1
    in messages, like a person counts them)."""
    if not isinstance(obj, list):
        raise BadSpecError(f"{source} must be a JSON list of configurations (lists of rates), "
                           f"got {_kind(obj)}")
    if not obj:
        raise BadSpecError(f"{source} holds no configurations")
    configs: list[list[float]] = []
    for row_no, row in enumerate(obj, start=1):
        if not isinstance(row, list):
            raise BadSpecError(f"{source} row {row_no} is {_kind(row)}, expected a list of rates")
        if not row:
            raise BadSpecError(f"{source} row {row_no} is empty, expected one rate per unit")
        if n_units is not None and len(row) != n_units:
            raise BadSpecError(f"{source} row {row_no} has {_rates(len(row))}, expected {n_units} "
                               f"(one per unit of the model)")
        if configs and len(row) != len(configs[0]):
            raise BadSpecError(f"{source} row {row_no} has {_rates(len(row))}, expected "
                               f"{len(configs[0])} (one per unit, as in row 1)")
        configs.append([_rate(value, source, row_no, col_no) for col_no, value in enumerate(row, start=1)])
    return configs


def symbol(unit_name: str, rate: float) -> str:
    """The paper's symbol `u(r)`: `4(.5)`, `5(0)`; the rate is written in its shortest exact
    form without the leading zero, so distinct rates never share a symbol."""
    if rate == 0:
        return f"{unit_name}(0)"
    text = repr(float(rate))
    return f"{unit_name}({text[1:] if text.startswith('0.') else text})"


def checked_rate(rate: float) -> float:
    """A rate given as a parameter (not read from a file) as a plain float in [0, 1), or one
    clear error: the samplers' and the sensitivity profile's rates."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and 0 <= rate < 1):
        raise BadSpecError(f"pruning rate {rate!r} is outside [0, 1)")
    return float(rate) + 0.0


def _rate(value: Any, source: str, row_no: int, col_no: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadSpecError(f"{source} row {row_no} rate {col_no} is not a number: {json.dumps(value, default=repr)}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise BadSpecError(f"{source} row {row_no} rate {col_no} is {value}, outside [0, 1)")
    return float(value) + 0.0  # +0.0 turns -0.0 into 0.0


def _rates(count: int) -> str:
    return f"{count} rate" if count == 1 else f"{count} rates"


def _kind(value: Any) -> str:
    names = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null",
             int: "a number", float: "a number", list: "a list"}
    return names.get(type(value), type(value).__name__)
