"""benchmarks/device_session.sh, the prepared command for a GPU lease, kept working on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_session.sh"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~4 min alone (KREM of the 268 images, two speed cases), far longer on a busy machine
def test_device_session_smoke_runs_its_stages_and_packs_the_run(bach_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SMOKE": "1",
        "OUT": str(out),
        "PYTHON": sys.executable,
        "DATA": str(bach_dir),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1700)
    log = (out / "session.log").read_text()
    assert done.returncode == 0, log
    assert "failed or ran out of time" not in log and "training stopped" not in log, log
    assert "| cpu_config | cpu | 3 x resnet18 |" in log  # the speed table
    assert "3. skipped" in log  # the smoke test leaves torch.compile out
    with tarfile.open(out / "sysb_gpu_short.tar.gz") as packed:
        names = packed.getnames()
    assert "smoke_run/fold1/predictions/image.csv" in names and "smoke_run/report/metrics.json" in names
    assert not any(name.endswith(".safetensors") or "/cache" in name for name in names)  # small enough to return
