"""The main job on built-in data (``make demo`` / ``histobreast demo``): both systems end to end.

Six stages, all on synthetic H&E trees written here in the real datasets' layouts, at toy sizes
so the whole job fits in a few minutes on a 2-core CPU:

1. System A (Zhu et al. 2019): the hybrid GoogLeNet-SEP model trained and tested on 2 official
   folds of a synthetic BreaKHis 200X tree; five evaluation methods; paper-layout report.
2. SEP channel pruning of fold 1's model to O = 0.5 with a short retraining: parameters, MACs,
   CPU latency and accuracy before and after.
3. Bagging: 3 members trained on non-overlapping subsets of fold 1's training set, sum rule.
4. A case review of fold 1's test images (what ``predict --review`` writes for a pathologist),
   then a synthetic whole slide through ``slide predict`` with the same model.
5. System B (Liu et al. 2022): MSMV-PFENet on a synthetic BACH tree, six-view majority vote.
6. A summary report (``OUT/report/report.md`` and ``.html``, :mod:`histobreast.demo_report`) pointing to
   every stage's report.

The experiment configs are ``configs/demo/*.yaml`` in the source tree.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from histobreast.data.synthetic import synth_bach, synth_breakhis
from histobreast.demo_report import BREAKHIS_MAGNIFICATION, DemoResult, write_demo_report
from histobreast.errors import ConfigError
from histobreast.pipelines.config import ExperimentConfig, load_config
from histobreast.seeding import seed_problem

log = logging.getLogger(__name__)

#: The demo's experiment configs, in the source tree beside ``src/``.
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "demo"
SYSTEM_A_CONFIG = "zhu2019_synthetic.yaml"
SYSTEM_B_CONFIG = "liu2022_synthetic.yaml"

# Stage sizes (kept here, not in the configs, because they size the demo rather than the method).
BREAKHIS_PATIENTS_PER_SUBTYPE = 2  # 16 patients, 8 subtypes
BREAKHIS_IMAGES_PER_PATIENT = 6  # at one magnification
BREAKHIS_SIZE = (350, 230)  # half of BreaKHis's 700x460 (same field of view, twice the µm/px)
BACH_PER_CLASS = 20
BACH_SIZE = (512, 384)  # a quarter of BACH's 2048x1536
SYSTEM_A_FOLDS = (1, 2)
PRUNE_RATIO = 0.5  # paper A's chosen O
PRUNE_RETRAIN_ITERATIONS = 40
ENSEMBLE_MEMBERS = 3  # paper A: 5; 3 keeps the demo short
ENSEMBLE_ITERATIONS = 100
#: The folders a demo writes under its --out; the next demo there replaces them, and nothing else.
DEMO_FOLDERS = ("data", "system_a", "pruned", "ensemble", "review", "slide", "system_b", "report")


def _config_path(config_dir: Path, name: str) -> Path:
    path = config_dir / name
    if not path.is_file():
        raise ConfigError(f"{path}: demo config not found; run from a source checkout or pass --configs DIR")
    return path


def _config(config_dir: Path, name: str, root: Path, overrides: list[str]) -> ExperimentConfig:
    return load_config(_config_path(config_dir, name), [f"data.root={root}", *overrides])


def clear_previous_demo(out_dir: str | Path) -> Path:
    """Remove an earlier demo's :data:`DEMO_FOLDERS` under ``out_dir`` (its runs would otherwise
    refuse to start over finished checkpoints); any other file there stays. Returns the folder."""
    out = Path(out_dir)
    for name in DEMO_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    return out


def run_demo(
    out_dir: str | Path, *, config_dir: str | Path | None = None, seed: int = 0, say: Callable[[str], None] = print
) -> DemoResult:
    """Run the six stages into ``out_dir`` (created; an earlier demo's folders there are replaced)."""
    from histobreast.data.protocol import read_fold
    from histobreast.pipelines.bagging import evaluate_ensemble, train_ensemble
    from histobreast.pipelines.config import EnsembleOptions, PruneOptions
    from histobreast.pipelines.experiment import run_experiment
    from histobreast.pipelines.package import load_model_folder
    from histobreast.pipelines.predict import predict_records, write_review
    from histobreast.pipelines.pruning import prune_model_folder
    from histobreast.pipelines.pruning_report import image_accuracy, model_costs
    from histobreast.report.case_review import review_cases

    if seed_problem(seed):
        raise ConfigError(f"seed: {seed_problem(seed)}")
    configs = Path(config_dir) if config_dir is not None else DEFAULT_CONFIG_DIR
    for name in (SYSTEM_A_CONFIG, SYSTEM_B_CONFIG):  # before an earlier demo is removed
        _config_path(configs, name)
    out = clear_previous_demo(out_dir)
    result = DemoResult(out, out / "report", PRUNE_RATIO)
    seed_override = [f"seed={seed}"]

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        say(f"[demo] {stage} ...")
        start = time.perf_counter()
        value = fn()
        result.seconds[stage] = time.perf_counter() - start
        say(f"[demo] {stage}: done in {result.seconds[stage]:.0f} s")
        return value

    breakhis_root = out / "data" / "breakhis"
    timed(
        "synthesise BreaKHis",
        lambda: synth_breakhis(
            breakhis_root,
            patients_per_subtype=BREAKHIS_PATIENTS_PER_SUBTYPE,
            images_per_magnification=BREAKHIS_IMAGES_PER_PATIENT,
            magnifications=(BREAKHIS_MAGNIFICATION,),
            size=BREAKHIS_SIZE,
            seed=seed,
        ),
    )
    cfg_a = _config(
        configs, SYSTEM_A_CONFIG, breakhis_root, [*seed_override, f"data.magnification={BREAKHIS_MAGNIFICATION}"]
    )
    system_a = timed(
        "System A: train and evaluate",
        lambda: run_experiment(cfg_a, out / "system_a", folds=list(SYSTEM_A_FOLDS), resume=False),
    )
    for method in system_a.methods:
        mean, std = system_a.mean_std("image_level_accuracy", method)
        result.numbers[f"system_a/{method}"] = {"mean": mean, "std": std}

    # Stages 2 and 3 reuse fold 1's training and test images.
    fold, classes = read_fold(cfg_a.data, cfg_a.seed, SYSTEM_A_FOLDS[0])
    train, val, test = fold.train, fold.val, fold.test
    unpruned_folder = system_a.model_folders[SYSTEM_A_FOLDS[0]]

    prune_options = PruneOptions(ratio=PRUNE_RATIO, loops=1, retrain_iterations=PRUNE_RETRAIN_ITERATIONS)
    pruned_folder = timed(
        "prune O=0.5 and retrain",
        lambda: prune_model_folder(unpruned_folder, out / "pruned", train, val, options=prune_options),
    )
    for name, folder in (("unpruned", unpruned_folder), ("pruned", pruned_folder)):
        loaded = load_model_folder(folder)
        costs = model_costs(loaded, latency_repeats=5)
        result.numbers[f"compression/{name}"] = {**costs, "accuracy": image_accuracy(loaded, test)}

    cfg_bag = dataclasses.replace(cfg_a, train=dataclasses.replace(cfg_a.train, iterations=ENSEMBLE_ITERATIONS))
    ensemble_dir = out / "ensemble"
    timed(
        "ensemble: train 3 members",
        lambda: train_ensemble(
            cfg_bag, train, classes, ensemble_dir, options=EnsembleOptions(members=ENSEMBLE_MEMBERS), test_records=test
        ),
    )
    bagging = timed("ensemble: evaluate", lambda: evaluate_ensemble(ensemble_dir, test, ensemble_dir / "evaluation"))
    result.numbers["ensemble/sum"] = bagging["ensemble"]["metrics"]["image_level_accuracy"]
    result.numbers["ensemble/members"] = {
        name: m["metrics"]["image_level_accuracy"] for name, m in bagging["members"].items()
    }

    def review() -> None:
        predicted = predict_records(unpruned_folder, test, sources=["fold 1 test images"])
        write_review(predicted, out / "review")
        result.numbers["review/flagged"] = sum(
            case.flagged for case in review_cases(predicted.methods, predicted.method)
        )
        result.numbers["review/images"] = len(test)

    timed("case review of fold 1's test images", review)

    from histobreast.pipelines.slide_demo import demo_slide_stage

    result.numbers["slide"] = timed(
        "slide: synthetic slide -> slide predict", lambda: demo_slide_stage(out / "slide", unpruned_folder, seed, say)
    )

    bach_root = out / "data" / "bach"
    timed("synthesise BACH", lambda: synth_bach(bach_root, per_class=BACH_PER_CLASS, size=BACH_SIZE, seed=seed))
    cfg_b = _config(configs, SYSTEM_B_CONFIG, bach_root, seed_override)
    system_b = timed("System B: train and evaluate", lambda: run_experiment(cfg_b, out / "system_b"))
    for method in system_b.methods:
        mean, std = system_b.mean_std("image_level_accuracy", method)
        result.numbers[f"system_b/{method}"] = {"mean": mean, "std": std}

    write_demo_report(result, chance={"system_a": 1 / len(classes), "system_b": 1 / len(cfg_b.data.classes or [0] * 4)})
    say(f"[demo] finished in {sum(result.seconds.values()):.0f} s; report: {result.report_dir / 'report.md'}")
    return result
