"""Shared by the export and runtime tests: tiny trained model folders of each kind on synthetic BACH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.pipelines import get_pipeline
from histobreast.pipelines.bagging import save_ensemble_folder
from histobreast.pipelines.config import PruneOptions
from histobreast.pipelines.pruning import prune_model_folder
from tiny_system_a import tiny_zhu_config

KINDS = ("hybrid", "ensemble", "pruned", "dns", "plain")


def train_models(root: Path, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """24 synthetic BACH images (96x64; 16 train, 8 test) and the model folders of ``kinds``: a tiny
    System A hybrid (``hybrid``, also member 1 of ``ensemble``), its O = 0.5 ``--internal`` prune
    (``pruned``) and DNS prune (``dns``), and a plain whole-image classifier (``plain``)."""
    synth_bach(root / "bach", per_class=6, size=(96, 64), image_format="png")
    records, classes = experiment_records(tiny_zhu_config(root / "bach").data)
    train, test = records[::3] + records[1::3], records[2::3]
    zhu = get_pipeline("zhu2019")
    seeds = (0, 1) if "ensemble" in kinds else (0,)
    members = [
        zhu.train_fold(
            tiny_zhu_config(root / "bach", seed=s, train={"iterations": 3}),
            train,
            [],
            classes,
            root / "ens" / f"member{s + 1}",
        )
        for s in seeds
    ]
    out: dict[str, Any] = {"root": root, "hybrid": members[0], "train": train, "test": test, "classes": classes}
    if "ensemble" in kinds:
        out["ensemble"] = save_ensemble_folder(root / "ens", members, "sum", classes=classes)
    prune = {"retrain_iterations": 1, "batch_size": 4}
    if "pruned" in kinds:
        options = PruneOptions(ratio=0.5, internal=True, **prune)
        out["pruned"] = prune_model_folder(members[0], root / "pruned", train, options=options)
    if "dns" in kinds:
        options = PruneOptions(ratio=0.5, dns=True, dns_sensitivity=0.5, **prune)
        out["dns"] = prune_model_folder(members[0], root / "dns", train, options=options)
    if "plain" in kinds:
        cfg = tiny_zhu_config(root / "bach", pipeline="image", train={"iterations": 3})
        out["plain"] = get_pipeline("image").train_fold(cfg, train, [], classes, root / "plain")
    return out
