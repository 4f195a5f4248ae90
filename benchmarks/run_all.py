"""Run every benchmark script in turn (``make bench``); each rewrites its own BENCHMARKS.md section.

    python -m benchmarks.run_all [--only preprocess compress ...]

Scripts are run as separate processes so each can pin its own thread counts before torch starts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Benchmark names: ``bench_<name>.py`` files beside this one."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=available(), help="run just these benchmarks")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or available():
        print(f"== benchmarks.bench_{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}"], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
