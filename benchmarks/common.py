"""Shared helpers for benchmark scripts: machine description and BENCHMARKS.md sections.

Each script owns one section, delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->``
markers, and rewrites only that section, so scripts can be re-run independently.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
from pathlib import Path

from histobreast.atomic import atomic_write_text

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\nMeasured numbers, each section written by the script named in it (machine and date included).\n"
)


def machine_info() -> str:
    """One line: CPU model, cores, memory, accelerator, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f"{mem_kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "? GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), {mem}, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def today() -> str:
    return _dt.date.today().isoformat()


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``markdown``."""
    text = path.read_text() if path.exists() else _HEADER
    block = f"<!-- BEGIN {name} -->\n{markdown.rstrip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)
    return path


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of a script's ``doc``, with ``--no-write``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    return parser
