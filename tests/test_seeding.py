"""One seed derivation: every derived seed is ``derive_seed(seed, *keys)``, never arithmetic on a seed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from histobreast.seeding import derive_seed

SRC = Path(__file__).resolve().parents[1] / "src" / "histobreast"
ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.BitXor, ast.LShift)


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def seed_arithmetic(source: str) -> list[int]:
    """Line numbers where a name ending in ``seed`` is added to, multiplied by, ... another value."""
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ARITHMETIC)
        and any(name.lower().endswith("seed") for side in (node.left, node.right) for name in _names(side))
    )


def test_the_check_finds_the_old_schemes():
    assert seed_arithmetic("split(seed=seed * 1000 + fold)\nfit(seed=cfg.seed + index)\n") == [1, 2]
    assert seed_arithmetic("derive_seed(seed, fold)\nnp.random.seed(seed % 2**32)\n") == []


def test_no_module_makes_a_seed_by_arithmetic():
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := seed_arithmetic(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"derive a seed with histobreast.seeding.derive_seed(seed, *keys), not arithmetic: {found}"


@pytest.mark.parametrize("parts", [(0,), (7, 2), (7, 2, 1)])
def test_derived_seeds_are_stable_and_distinct(parts):
    assert derive_seed(*parts) == derive_seed(*parts)
    assert derive_seed(*parts) != derive_seed(*parts, 0)
    assert 0 <= derive_seed(*parts) < 2**63
