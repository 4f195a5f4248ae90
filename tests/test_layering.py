"""The one-way data flow holds in the imports: no module loads a layer above its own.

Each layer is imported in a process that has loaded nothing of histobreast (tests/layering_probe.py),
and any module of a higher layer that appears in ``sys.modules`` fails that layer's case, naming the
import that brought it in; a second view reads the source, so an upward import inside a function
(run later, not at import) fails too. ``test_an_upward_import_is_caught`` shows the checker failing on a
throwaway package whose lower module imports its higher one, e.g.::

    low: import fakepkg.low loads fakepkg.high (layer high)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layering_probe import layer_of, package_modules, static_upward_imports

SRC = Path(__file__).resolve().parents[1] / "src"
PROBE = Path(__file__).resolve().parent / "layering_probe.py"

# Lowest first (docs/ARCHITECTURE.md): a layer may import the layers before it, never one after it.
LAYERS: list[tuple[str, list[str]]] = [
    ("root", ["histobreast", "histobreast.errors", "histobreast.atomic", "histobreast.seeding", "histobreast.config"]),
    ("data", ["histobreast.data"]),
    ("slides", ["histobreast.slides"]),  # beside data: slide files -> tiles
    ("preprocess", ["histobreast.preprocess"]),
    ("datasets", ["histobreast.datasets"]),
    ("models", ["histobreast.models"]),
    ("compress", ["histobreast.compress"]),
    ("engine", ["histobreast.engine"]),
    ("predictions", ["histobreast.predictions"]),
    ("votes", ["histobreast.votes"]),
    ("metrics", ["histobreast.metrics"]),
    ("report", ["histobreast.report"]),
    ("pipelines", ["histobreast.pipelines"]),
    ("explain", ["histobreast.explain"]),
    ("runtime", ["histobreast.runtime"]),  # torch-free ONNX inference (tests/test_runtime.py checks no torch loads)
    ("export", ["histobreast.export"]),  # model folders -> ONNX; checks itself through the runtime
    ("demo / cli", ["histobreast.demo", "histobreast.demo_report", "histobreast.cli", "histobreast.__main__"]),
]


def check_layers(package: str, root: Path, layers: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """``{layer: [violation, ...]}``: what importing each layer of ``package`` (under ``root``) loads from above."""
    spec = {"package": package, "root": str(root), "paths": [str(root)], "layers": layers}
    out = subprocess.run(
        [sys.executable, str(PROBE)], input=json.dumps(spec), capture_output=True, text=True, timeout=240, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def histobreast_layers() -> dict[str, list[str]]:
    return check_layers("histobreast", SRC, LAYERS)


LAYER_CASES = [name for name, _ in LAYERS]


@pytest.mark.parametrize("layer", LAYER_CASES)
def test_no_layer_imports_a_higher_one(histobreast_layers: dict, layer: str) -> None:
    assert histobreast_layers[layer] == []


@pytest.fixture(scope="module")
def histobreast_source_imports() -> dict[str, list[str]]:
    return static_upward_imports(SRC, "histobreast", LAYERS)


@pytest.mark.parametrize("layer", LAYER_CASES)
def test_no_layer_imports_a_higher_one_even_inside_functions(histobreast_source_imports: dict, layer: str) -> None:
    """The source view: lazy imports inside functions count too (importing a module does not run them)."""
    assert histobreast_source_imports[layer] == []


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in package_modules(SRC, "histobreast") if layer_of(m, LAYERS) is None]
    assert unplaced == []
    assert layer_of("histobreast.datasets.images", LAYERS) == 4  # not "data": a prefix ends at a dot


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "fakepkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    """The checker fails a layer that imports a higher one, and passes it once the import is gone."""
    layers = [("low", ["fakepkg", "fakepkg.low"]), ("high", ["fakepkg.high"])]
    _package(tmp_path, {"__init__.py": "", "low.py": "import fakepkg.high\n", "high.py": "import fakepkg.low\n"})
    found = check_layers("fakepkg", tmp_path, layers)
    assert found == {"low": ["import fakepkg.low loads fakepkg.high (layer high)"], "high": []}
    (tmp_path / "fakepkg" / "low.py").write_text("def later():\n    from fakepkg import high\n")
    assert check_layers("fakepkg", tmp_path, layers) == {"low": [], "high": []}  # not run at import...
    assert static_upward_imports(tmp_path, "fakepkg", layers) == {  # ... but in the source
        "low": ["fakepkg.low line 2 imports fakepkg.high (layer high)"],
        "high": [],
    }
    (tmp_path / "fakepkg" / "low.py").write_text("X = 1\n")
    (tmp_path / "fakepkg" / "extra.py").write_text("")
    found = check_layers("fakepkg", tmp_path, layers)
    assert found == {"low": [], "high": []}  # "fakepkg" holds fakepkg.extra
