"""Issue 21's sweep, counted: how many cases each fuzz target and walk generated, and how many failed.

    python -m benchmarks.bench_fuzz [--cases 200] [--before DIR] [--no-write]

Runs ``tests/test_reliability_sweep.py`` (slow cases included) in a subprocess with
``HISTOBREAST_FUZZ_CASES`` examples per hypothesis target and a fixed hypothesis seed, and reads
hypothesis' statistics and pytest's JUnit XML. ``--before DIR`` runs the same way on a tree
whose ``src/`` is from before the fixes (``git archive 07ce35e^``) and whose ``tests/`` hold this
sweep (its imports pointed at where the old code kept them), which gives the failures the sweep
finds there. Writes the BENCHMARKS.md section ``fuzz``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import benchmark_parser, machine_info, today, write_section

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "tests/test_reliability_sweep.py"
SEED = 0  # --hypothesis-seed: the same generated cases on every run
STATS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")


@dataclass
class Target:
    """One test function of the sweep: its generated (or parametrized) cases and failures."""

    cases: int = 0  # generated examples (hypothesis) or parametrized cases
    failed_ids: list[str] = field(default_factory=list)  # the failing tests (one per failure found)
    raised: list[str] = field(default_factory=list)  # what they raised, each name once


def run_sweep(root: Path, cases: int) -> tuple[dict[str, Target], float]:
    """Run the sweep in ``root``; ``({test function: Target}, wall seconds)``."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            SWEEP,
            "-q",
            "-m",
            "",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--hypothesis-show-statistics",
            f"--hypothesis-seed={SEED}",
            f"--junitxml={junit}",
        ]
        env = {**os.environ, "HISTOBREAST_FUZZ_CASES": str(cases), "PYTHONPATH": str(root / "src")}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if not junit.exists():
            raise SystemExit(f"the sweep did not run in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        targets = _from_junit(junit)
    _add_hypothesis_counts(targets, done.stdout)
    return targets, seconds


def _function(test_id: str) -> str:
    return test_id.split("[", 1)[0]


def _from_junit(path: Path) -> dict[str, Target]:
    """Each test function's parametrized cases and failures (a hypothesis test is one case here)."""
    targets: dict[str, Target] = defaultdict(Target)
    for case in ET.parse(path).iter("testcase"):
        name = case.get("name", "")
        if case.find("skipped") is not None:
            continue
        target = targets[_function(name)]
        target.cases += 1
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            target.failed_ids.append(name)
            if _exception_line(problem) not in target.raised:
                target.raised.append(_exception_line(problem))
    return dict(targets)


def _exception_line(problem: ET.Element) -> str:
    """The exception raised, in one short line (from the failure message, else its text)."""
    text = problem.get("message") or problem.text or ""
    raised = re.findall(r"\b([A-Z]\w*(?:Error|Exception)|DID NOT RAISE \w+|AssertionError)\b", text)
    return (raised[0] if raised else text.splitlines()[0] if text else "failed")[:80]


def _add_hypothesis_counts(targets: dict[str, Target], stdout: str) -> None:
    """Replace a hypothesis test's case count by its generated examples (all phases, all params)."""
    blocks = re.split(r"\n(?=\S+::\S+:\n)", stdout.split("Hypothesis Statistics", 1)[-1])
    generated: dict[str, int] = defaultdict(int)
    for block in blocks:
        header = re.match(r"\S+::(\S+):\n", block)
        if not header:
            continue
        for passing, failing, _invalid in STATS.findall(block):  # invalid draws never reach the test body
            generated[_function(header.group(1))] += int(passing) + int(failing)
    for name, cases in generated.items():
        targets.setdefault(name, Target()).cases = cases


def section(cases: int, after: tuple[dict[str, Target], float], before: tuple[dict[str, Target], float] | None) -> str:
    """The BENCHMARKS.md section: one row per sweep target, after (and before) the fixes."""
    now, seconds = after
    lines = [
        "## Reliability sweep: generated cases and failures (`tests/test_reliability_sweep.py`)",
        "",
        f"Machine: {machine_info()}. Date: {today()}. Command: `python -m benchmarks.bench_fuzz --cases {cases}"
        f"{' --before DIR' if before else ''}` (hypothesis seed {SEED}, {cases} examples per hypothesis target, "
        "the CLI walk's slow cases included). Cases: examples hypothesis generated (shrinking included) or "
        "parametrized cases; failures: failing tests, one per failure found (a hypothesis test stops at its "
        "first failing example and shrinks it; the text-file fuzz is one test per reader).",
        "",
    ]
    header = "| target | cases now | failures now |"
    rule = "| --- | ---: | ---: |"
    if before:
        header += " cases before the fixes | failures before | what they raised |"
        rule += " ---: | ---: | --- |"
    lines += [header, rule]
    for name in sorted(set(now) | set(before[0] if before else {})):
        row = now.get(name, Target())
        cells = (
            [f"`{name}`", str(row.cases), str(len(row.failed_ids))] if name in now else [f"`{name}`", "(absent)", ""]
        )
        if before:
            old = before[0].get(name)
            cells += [str(old.cases), str(len(old.failed_ids)), ", ".join(old.raised)] if old else ["(absent)", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(t.cases for t in now.values())
    failing = sum(len(t.failed_ids) for t in now.values())
    lines += ["", f"Now: {total} cases, {failing} failures, in {seconds:.0f} s."]
    if before:
        old_total = sum(t.cases for t in before[0].values())
        old_failing = sum(len(t.failed_ids) for t in before[0].values())
        lines.append(f"Before the fixes: {old_total} cases, {old_failing} failures, in {before[1]:.0f} s.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--cases", type=int, default=200, help="examples per hypothesis target")
    parser.add_argument("--before", type=Path, help="a tree (src/, tests/) from before the fixes")
    args = parser.parse_args()
    after = run_sweep(ROOT, args.cases)
    before = run_sweep(args.before.resolve(), args.cases) if args.before else None
    text = section(args.cases, after, before)
    print(text)
    if not args.no_write:
        write_section("fuzz", text)


if __name__ == "__main__":
    main()
