"""Regenerate README's explanation pictures from synthetic data only (BACH's licence forbids
redistributing its images, so none of them may be in the repository).

A synthetic BreaKHis 40X tree (``histobreast data synth``'s generator), System A's hybrid at the
demo's toy widths (configs/demo/zhu2019_synthetic.yaml) trained on all patients but one per class, then
``histobreast explain`` and ``histobreast predict --review --explain`` on one image of the held-out malignant patient.
Writes ``docs/images/explain_system_a.png`` (the figure) and ``docs/images/explain_card.png`` (its
case-review card). About 2 minutes on 2 CPU cores; everything else goes to a temporary folder.

    python docs/make_explain_images.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"


def small_png(source: Path, target: Path) -> None:
    """``source`` as a 256-colour PNG at ``target`` (a third of the size; the jet maps survive)."""
    from PIL import Image

    Image.open(source).convert("RGB").quantize(256).save(target, optimize=True)


def main() -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from histobreast.data.synthetic import synth_breakhis
    from histobreast.pipelines import zhu2019
    from histobreast.pipelines.common import experiment_records
    from histobreast.pipelines.config import load_config

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="explain_images_") as tmp:
        root = Path(tmp)
        synth_breakhis(root / "data", magnifications=[40], images_per_magnification=6, seed=0)
        overrides = [f"data.root={root / 'data'}", "train.iterations=150", "train.log_every=1000"]
        cfg = load_config(REPO / "configs" / "demo" / "zhu2019_synthetic.yaml", overrides)
        records, classes = experiment_records(cfg)
        held_out = {label: max(r.patient_id for r in records if r.label == label) for label in classes}
        test = [r for r in records if r.patient_id == held_out[r.label]]  # one patient per class, unseen
        train = [r for r in records if r not in test]
        model = zhu2019.train_fold(cfg, train, [], classes, root / "fold1")
        image = next(r.path for r in test if r.label == "malignant")
        cli = [sys.executable, "-m", "histobreast"]
        subprocess.run([*cli, "explain", str(model), str(image), "--out", str(root / "x")], check=True)
        review = ["--out", str(root / "p.csv"), "--review", str(root / "review"), "--explain"]
        subprocess.run([*cli, "predict", str(model), str(image), *review], check=True)
        (figure,) = (root / "x").glob("*.png")
        (card,) = (root / "review" / "figures").glob("case*.png")
        IMAGES.mkdir(parents=True, exist_ok=True)
        small_png(figure, IMAGES / "explain_system_a.png")
        small_png(card, IMAGES / "explain_card.png")
    print(f"wrote {IMAGES / 'explain_system_a.png'} and {IMAGES / 'explain_card.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
