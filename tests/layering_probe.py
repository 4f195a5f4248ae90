"""Which modules of a higher layer does importing each layer load? (the checker of test_layering.py)

``python layering_probe.py < SPEC.json`` reads ``{"package", "paths", "layers": [[name, [prefix, ...]], ...]}``
(lowest layer first), and prints ``{layer: [violation, ...]}`` as JSON. For every layer it forks one
child process (all at once) from an interpreter that has loaded nothing of ``package``: the child imports each of
the layer's modules in turn and names every module of a higher layer that appears in
``sys.modules``, with the import that brought it in. The parent first imports the third-party
libraries the package imports at top level (torch, numpy, ...), so each child starts as fresh as a
new interpreter as far as ``package`` is concerned, but the slow libraries load once, not per layer.
A module that no layer holds is a violation too: a new module must be given its place.

Standard library only, so that the probe itself loads nothing of what it checks.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
import traceback
from pathlib import Path


def package_modules(root: Path, package: str) -> list[str]:
    """Dotted names of every module of ``package`` under ``root`` (``__main__`` left out: it runs)."""
    names = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int | None:
    """Index of the layer whose longest prefix names ``module`` (None: no layer holds it)."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def third_party_imports(root: Path, package: str) -> list[str]:
    """Top-level names the package imports at module level, other than itself and the standard library."""
    found: set[str] = set()
    for path in (root / package).rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return sorted(n for n in found if n != package and n not in sys.stdlib_module_names and n != "__future__")


def static_upward_imports(root: Path, package: str, layers: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """``{layer: violations}`` from the source: every ``import`` of a higher layer, also inside functions
    (lazy imports, which importing a module does not run)."""
    result: dict[str, list[str]] = {name: [] for name, _ in layers}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        here = layer_of(module, layers)
        if here is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from pkg import sub`` may import the module pkg.sub: judge each name as pkg.name.
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                there = layer_of(target, layers)
                if there is not None and there > here:
                    result[layers[here][0]].append(
                        f"{module} line {node.lineno} imports {target} (layer {layers[there][0]})"
                    )
    return result


def _check_layer(index: int, modules: list[str], package: str, layers: list[tuple[str, list[str]]]) -> list[str]:
    """In a fresh child: import ``modules`` (layer ``index``) one by one; report higher-layer arrivals."""
    violations, reported = [], set()
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:
            violations.append(f"{module}: import failed: {traceback.format_exc(limit=1).strip().splitlines()[-1]}")
            continue
        for loaded in sorted(m for m in sys.modules if m == package or m.startswith(package + ".")):
            where = layer_of(loaded, layers)
            if where is not None and where > index and loaded not in reported:
                reported.add(loaded)
                violations.append(f"import {module} loads {loaded} (layer {layers[where][0]})")
    return violations


def check_layers(package: str, root: Path, layers: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """``{layer: violations}`` for every layer, each checked in its own forked child process."""
    modules = package_modules(root, package)
    by_layer: dict[int, list[str]] = {i: [] for i in range(len(layers))}
    result: dict[str, list[str]] = {name: [] for name, _ in layers}
    for module in modules:
        where = layer_of(module, layers)
        if where is None:
            result[layers[0][0]].append(f"{module}: no layer holds it (add it to the layer table)")
        else:
            by_layer[where].append(module)
    for library in third_party_imports(root, package):
        try:
            importlib.import_module(library)
        except Exception:  # an optional dependency: the child meets the same error, named by module
            pass
    loaded_early = [m for m in sys.modules if m == package or m.startswith(package + ".")]
    assert not loaded_early, f"a third-party import loaded {loaded_early}"
    children = []
    for index, (name, _) in enumerate(layers):  # all at once: each child only imports the package
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one layer, then leave without running the parent's exit handlers
            os.close(read)
            payload = json.dumps(_check_layer(index, by_layer[index], package, layers)).encode()
            with os.fdopen(write, "wb") as out:
                out.write(payload)
            os._exit(0)
        os.close(write)
        children.append((name, pid, read))
    for name, pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        result[name] += json.loads(data) if data else [f"the child checking layer {name} died (status {status})"]
    return result


def main() -> None:
    spec = json.loads(sys.stdin.read())
    sys.path[:0] = spec["paths"]
    layers = [(name, list(prefixes)) for name, prefixes in spec["layers"]]
    print(json.dumps(check_layers(spec["package"], Path(spec["root"]), layers)))


if __name__ == "__main__":
    main()
