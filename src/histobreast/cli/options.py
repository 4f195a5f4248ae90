"""Number options several commands share, checked the same way as they are parsed.

Click's ranges let NaN through and typer's ints take any size, so a seed of -1 or 10**20, a scale of
0 or NaN, or an overlap of NaN once reached numpy or torch and ended in a traceback (or meant the
default without a word). Each check here is a typer ``callback`` raising a one-line
:class:`~histobreast.errors.ConfigError` that names the option (exit 1).
"""

from __future__ import annotations

import math
from typing import Any

import typer

from histobreast.data.records import scale_problem
from histobreast.errors import ConfigError
from histobreast.seeding import seed_problem


def _name(param: typer.CallbackParam) -> str:
    return next((o for o in param.opts if o.startswith("--")), param.opts[0])


def check_seed(param: typer.CallbackParam, value: int) -> int:
    """A seed every generator takes (see :func:`histobreast.seeding.seed_problem`)."""
    problem = seed_problem(value)
    if problem:
        raise ConfigError(f"{_name(param)}: {problem}")
    return value


def check_scale(param: typer.CallbackParam, value: float | None) -> float | None:
    """A microscope image's µm/px, or None (see :func:`histobreast.data.records.scale_problem`)."""
    problem = None if value is None else scale_problem(value)
    if problem:
        raise ConfigError(f"{_name(param)}: {problem}")
    return value


def check_finite(param: typer.CallbackParam, value: Any) -> Any:
    """A number (or list of numbers) that is not NaN or infinite; None passes (the option's default)."""
    for number in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"{_name(param)}: must be a finite number, got {number}")
    return value


def seed_option(help: str) -> Any:
    """``--seed`` (default 0), checked by :func:`check_seed`."""
    return typer.Option(0, "--seed", callback=check_seed, help=help)
