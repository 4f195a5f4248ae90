"""House rule: no file in src/ over 450 lines (one module, one job)."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "histobreast"
MAX_LINES = 450


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_source_file_over_the_limit() -> None:
    too_long = {str(p.relative_to(SRC)): _lines(p) for p in SRC.rglob("*.py") if _lines(p) > MAX_LINES}
    assert too_long == {}
