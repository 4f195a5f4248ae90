"""The README and docs/ stay true to the code: their commands, options, config files and Python
examples must exist as written (a renamed option or config otherwise goes stale silently)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
import typer

from histobreast.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)


def fenced(kinds: set[str]) -> list[tuple[str, str]]:
    """(document name, block text) of every fenced block whose language is in ``kinds``."""
    return [
        (doc.name, body)
        for doc in DOCS
        for kind, body in FENCE.findall(doc.read_text(encoding="utf-8"))
        if kind in kinds
    ]


def command_lines() -> list[tuple[str, str]]:
    """Every ``histobreast ...`` invocation in shell blocks and inline code, continuation lines joined."""
    found = []
    for name, body in fenced({"", "bash", "sh", "console"}):
        for line in body.replace("\\\n", " ").splitlines():
            found.append((name, line))
    for doc in [*DOCS, ROOT / "BENCHMARKS.md"]:  # the benchmark scripts write commands into it too
        prose = FENCE.sub("", doc.read_text(encoding="utf-8"))
        found.extend((doc.name, code) for code in re.findall(r"`([^`]*histobreast [a-z][^`]*)`", prose))
    lines = []
    for name, line in found:
        line = re.sub(r"(^|\s)#.*", "", line)  # a trailing comment
        match = re.search(r"(?:^|[\s$])histobreast ([a-z].*)", line)
        if match and "import" not in line:
            lines.append((name, re.split(r"\s(?:\||;|&&)\s", match.group(1))[0].strip()))
    return lines


COMMANDS = command_lines()


def test_the_docs_name_commands() -> None:
    assert len(COMMANDS) > 60  # the extraction found the README's and docs' examples
    assert {name for name, _ in COMMANDS} >= {"README.md", "data.md", "compression.md", "system_a.md", "system_b.md"}


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{line[:50]}" for d, line in COMMANDS])
def test_documented_commands_and_options_exist(doc: str, line: str) -> None:
    command = typer.main.get_command(app)
    path = ["histobreast"]
    for token in shlex.split(line):
        if token in {"...", "…"}:
            break  # an elided command line
        group = getattr(command, "commands", None)  # a command group: the token names a sub-command
        if group is not None and not token.startswith("-"):
            # `prune MODEL_FOLDER` is `prune run MODEL_FOLDER` (the group's default command)
            assert token in group or "run" in group, f"{doc}: `{line}`: {' '.join(path)} has no command {token!r}"
            path.append(token if token in group else "run")
            command = group[path[-1]]
            if token in group:
                continue
        if token.startswith("-"):
            if group is not None and "run" in group:  # `pretrain --config ...` is `pretrain run --config ...`
                path.append("run")
                command = group["run"]
            option = token.split("=", 1)[0]
            known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
            assert option in known, f"{doc}: `{line}`: {' '.join(path)} has no option {option}"


def test_documented_config_files_exist() -> None:
    """Every ``configs/....yaml`` named in the docs, in a config's comments or in a benchmark script exists."""
    sources = [*DOCS, ROOT / "BENCHMARKS.md", *ROOT.glob("configs/**/*.yaml"), *ROOT.glob("benchmarks/*.[ps][yh]")]
    texts = {str(doc.relative_to(ROOT)): doc.read_text(encoding="utf-8") for doc in sources}
    named = {(name, path) for name, text in texts.items() for path in re.findall(r"configs/[\w./-]+\.yaml", text)}
    assert len(named) > 20
    missing = sorted(f"{name}: {path}" for name, path in named if not (ROOT / path).is_file())
    assert not missing, missing


def _placeholder_call(node: ast.Call) -> tuple[list[object], dict[str, object]] | None:
    """Stand-in arguments of a call, or None when it unpacks ``*args``/``**kwargs`` (not checkable)."""
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        return None
    return [object()] * len(node.args), {k.arg: object() for k in node.keywords if k.arg}


PYTHON = fenced({"python"})


@pytest.mark.parametrize(("doc", "code"), PYTHON, ids=[f"{d}:{i}" for i, (d, _) in enumerate(PYTHON)])
def test_python_examples_import_and_call_what_exists(doc: str, code: str) -> None:
    tree = ast.parse(code, filename=doc)
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("histobreast"):
            module = importlib.import_module(node.module)  # type: ignore[arg-type]
            for alias in node.names:
                assert hasattr(module, alias.name), f"{doc}: {node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and callable(names.get(node.func.id)):
            arguments = _placeholder_call(node)
            if arguments is not None:
                try:
                    inspect.signature(names[node.func.id]).bind(*arguments[0], **arguments[1])
                except TypeError as err:
                    pytest.fail(f"{doc}: `{ast.unparse(node)}` does not fit {node.func.id}'s signature: {err}")


def _resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module, or an attribute of one (``histobreast.votes.majority_vote``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def test_documented_modules_and_source_files_exist() -> None:
    text = "\n".join(doc.read_text(encoding="utf-8") for doc in DOCS)
    dotted = set(re.findall(r"`(histobreast(?:\.\w+)+)`", text)) - {"histobreast.json"}  # the dataset file
    files = set(re.findall(r"`((?:src/histobreast/)?(?:\w+/)+\w+\.py)`", text))
    assert len(dotted) > 20 and len(files) > 5
    missing = sorted(name for name in dotted if not _resolves(name))
    missing += sorted(
        path for path in files if not (ROOT / path).is_file() and not (ROOT / "src" / "histobreast" / path).is_file()
    )
    assert not missing, missing


def test_the_architecture_map_names_every_module() -> None:
    """docs/ARCHITECTURE.md is the newcomer's map of the package: each module file is on it."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    package = ROOT / "src" / "histobreast"
    modules = [
        p.relative_to(package)
        for p in package.rglob("*.py")
        if p.name not in {"__init__.py", "__main__.py"} and p.parent.name != "cli"
    ]  # cli: one per command
    assert len(modules) > 40
    unnamed = sorted(str(m) for m in modules if f"`{m.name}`" not in text and f"`histobreast.{m.stem}`" not in text)
    assert not unnamed, unnamed


# A reference to a document: ``docs/name.md`` in any text, or the target of a Markdown link.
DOC_PATH = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md)\b")
LINK_TARGET = re.compile(r"\]\(([^)#\s:]+)(?:#[^)]*)?\)")  # no scheme: http(s) links are not files


def missing_doc_references(files: list[Path], root: Path = ROOT) -> list[str]:
    """``file: reference`` for every document a file names that does not exist.

    ``docs/...`` paths are from the repository ``root``; Markdown link targets from the linking file.
    """
    missing = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        targets = [root / ref for ref in DOC_PATH.findall(text)]
        if path.suffix == ".md":
            targets += [path.parent / ref for ref in LINK_TARGET.findall(text)]
        missing += [f"{path.relative_to(root)}: {t.relative_to(root)}" for t in targets if not t.exists()]
    return sorted(set(missing))


def _citing_files() -> list[Path]:
    """Source (docstrings and comments), benchmark scripts, configs, README, docs/ and BENCHMARKS.md."""
    code = [*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "configs").rglob("*.yaml")]
    return [*DOCS, ROOT / "BENCHMARKS.md", *code]


def test_every_cited_document_exists() -> None:
    files = _citing_files()
    cited = [ref for path in files for ref in DOC_PATH.findall(path.read_text(encoding="utf-8"))]
    assert len(cited) > 20  # the extraction finds the citations
    assert missing_doc_references(files) == []


def test_a_citation_of_a_missing_document_is_caught(tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "data.md").write_text("# Data\n", encoding="utf-8")
    source, page = tmp_path / "module.py", tmp_path / "docs" / "page.md"
    source.write_text('"""Details in docs/nowhere.md; see also docs/data.md."""\n', encoding="utf-8")
    page.write_text("[gone](gone.md), [there](data.md#top), [web](https://example.org/x.md)\n", encoding="utf-8")
    assert missing_doc_references([source, page], root=tmp_path) == [
        "docs/page.md: docs/gone.md",
        "module.py: docs/nowhere.md",
    ]
