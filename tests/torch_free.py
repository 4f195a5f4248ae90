"""Run code in a fresh interpreter that fails if torch loads: the torch-free runtime's tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_without_torch(statements: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``statements`` (which set ``status``) in a new interpreter; it exits 1 if any torch module loaded."""
    code = (
        f"import sys\n{statements}\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, f'torch loaded: {loaded[:5]}'\n"
        "sys.exit(status)\n"
    )
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
