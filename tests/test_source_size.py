"""House rule: no file in src/ over 450 lines (one module, one job)."""

from __future__ import annotations

from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "histobreast"
MAX_LINES = 450

# Files another engineer is splitting right now: strict, so the lead sees them flip.
BEING_SPLIT = {"engine/config.py": "arch-config splits the config by owner (issue 15)"}


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_source_file_over_the_limit() -> None:
    too_long = {
        str(p.relative_to(SRC)): _lines(p)
        for p in SRC.rglob("*.py")
        if _lines(p) > MAX_LINES and str(p.relative_to(SRC)) not in BEING_SPLIT
    }
    assert too_long == {}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=r)) for n, r in BEING_SPLIT.items()]
)
def test_files_being_split_get_under_the_limit(name: str) -> None:
    path = SRC / name
    assert not path.exists() or _lines(path) <= MAX_LINES
