"""The ``--data`` option of the commands that read an experiment config: it replaces data.root."""

from __future__ import annotations

from pathlib import Path


def with_data_root(overrides: list[str] | None, data: Path | None) -> list[str]:
    """Config overrides (``--set``) plus ``data.root=DATA`` when ``--data`` is given (it wins over ``--set``)."""
    return [*(overrides or []), *([f"data.root={data}"] if data is not None else [])]
