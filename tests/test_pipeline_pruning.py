"""The pruning workflow on model folders: schedule, prune + retrain, DNS, training data, the study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from histobreast.compress.dns import load_sparse_weights
from histobreast.compress.importance import load_importance
from histobreast.compress.profile import count_macs, count_parameters
from histobreast.compress.prune import per_loop_fraction
from histobreast.data.protocol import experiment_splits
from histobreast.data.splits import write_splits_csv
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.errors import CheckpointError, ConfigError
from histobreast.models.weights import read_weights
from histobreast.pipelines import get_pipeline
from histobreast.pipelines import pruning as pruning_module
from histobreast.pipelines.config import PruneOptions
from histobreast.pipelines.package import load_model_folder
from histobreast.pipelines.pruning import (
    channel_widths,
    prune_model_folder,
    prune_network,
    prune_options,
    training_records,
)
from histobreast.pipelines.pruning_report import compression_report, example_inputs, read_sweep, run_sweep
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def bach_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bach")
    synth_bach(root, per_class=20, size=(64, 48))
    return root


@pytest.fixture(scope="module")
def trained(bach_root, tmp_path_factory):
    """A tiny hybrid trained by the zhu2019 pipeline inside an experiment folder layout."""
    cfg = tiny_zhu_config(bach_root)
    records, classes = experiment_records(cfg.data)
    splits = experiment_splits(cfg.data, records, cfg.seed)
    run = tmp_path_factory.mktemp("run")
    write_splits_csv(splits, run / "splits.csv")
    train = [r for r in records if splits[0].subsets[r.image_id] == "train"]
    folder = get_pipeline("zhu2019").train_fold(cfg, train[:6], train[6:10], classes, run / "fold1")
    test = [r for r in records if splits[0].subsets[r.image_id] == "test"]
    return {"cfg": cfg, "folder": folder, "train": train, "test": test, "classes": classes}


def test_ratio_schedule_is_paper_eq8_and_fig10() -> None:
    fractions = [per_loop_fraction(0.8, loops) for loops in (1, 2, 3, 4)]
    np.testing.assert_allclose(fractions, [0.8, 0.5528, 0.4152, 0.3313], atol=1e-4)  # Fig. 10: 0.8, 0.55, 0.42, 0.33
    for loops, fraction in zip((1, 2, 3, 4), fractions):
        assert (1 - fraction) ** loops == pytest.approx(0.2)  # R loops of X remove O in all


def test_options_come_from_the_config_and_are_checked(bach_root) -> None:
    cfg = tiny_zhu_config(bach_root, prune={"ratio": 0.7, "loops": 2})
    assert (prune_options(cfg).ratio, prune_options(cfg).loops) == (0.7, 2)
    assert prune_options(cfg, ratio=0.25, loops=None).loops == 2
    with pytest.raises(ConfigError, match="prune.ratio"):
        prune_options(cfg, ratio=1.0)
    with pytest.raises(ConfigError, match="prune.ration"):
        prune_options(tiny_zhu_config(bach_root, prune={"ration": 0.5}))


def test_pruned_model_folder_loads_predicts_and_retrains(trained, tmp_path, monkeypatch) -> None:
    measured_widths = []  # the global branch's 4e width at every importance pass
    original = pruning_module.measure_importance

    def measure(model, *args, **kwargs):
        measured_widths.append(model.global_branch.inception["4e"].out_channels)
        return original(model, *args, **kwargs)

    monkeypatch.setattr("histobreast.pipelines.pruning.measure_importance", measure)
    options = PruneOptions(ratio=0.5, loops=2, batch_size=3)
    out = prune_model_folder(
        trained["folder"], tmp_path / "pruned", trained["train"][:6], trained["train"][6:10], options=options
    )
    monkeypatch.undo()
    # Before, then re-measured on loop 1's pruned network for loop 2, then after: each pass sees a smaller net.
    assert len(measured_widths) == 3 and measured_widths[0] > measured_widths[1] > measured_widths[2]
    base, pruned = load_model_folder(trained["folder"]), load_model_folder(out)
    before, after = channel_widths(base.model), channel_widths(pruned.model)
    for branch in ("global_branch.", "local_branch."):
        for layer, channels in before[branch].items():
            assert after[branch][layer] < channels  # two loops of X = 0.29 each remove about half
            assert after[branch][layer] == pytest.approx(channels * 0.5, abs=2)
    assert pruned.info["model_kwargs"]["global_kwargs"]["widths"] == {
        name: list(w) for name, w in pruned.model.global_branch.widths.items()
    }
    assert pruned.info["pruning"]["per_loop_fraction"] == pytest.approx(per_loop_fraction(0.5, 2))
    record = json.loads((out / "pruning.json").read_text())
    assert [loop["loop"] for loop in record["loops"]] == [1, 2]
    assert record["loops"][1]["widths"] == after
    assert (out / "runs" / "loop2" / "local" / "checkpoints" / "best.json").is_file()
    importance_before, importance_after = (
        load_importance(out / "importance_before.safetensors"),
        load_importance(out / "importance_after.safetensors"),
    )
    assert len(importance_before["global_branch.se.4e"]) == before["global_branch."]["4e"]
    assert len(importance_after["global_branch.se.4e"]) == after["global_branch."]["4e"]
    assert {p.name for p in out.glob("importance_*.png")} == {
        "importance_global_branch.png",
        "importance_local_branch.png",
    }
    assert count_parameters(pruned.model) < count_parameters(base.model)

    methods = get_pipeline("zhu2019").predict_records(out, trained["test"][:4], device="cpu")
    assert list(methods)[0] == "hybrid" and methods["hybrid"].probs.shape == (4, 2)
    # The pruned folder is a model folder like any other: it can be pruned (retrained) again.
    again = prune_model_folder(out, tmp_path / "again", trained["train"][:4], options=PruneOptions(ratio=0.0))
    assert channel_widths(load_model_folder(again).model) == after


def test_internal_pruning_shrinks_the_stem_and_reduce_convs_of_both_branches(trained, tmp_path) -> None:
    out = prune_model_folder(
        trained["folder"],
        tmp_path / "pruned",
        trained["train"][:4],
        options=PruneOptions(ratio=0.5, internal=True, batch_size=3),
    )
    base, pruned = load_model_folder(trained["folder"]), load_model_folder(out)
    assert pruned.info["pruning"]["internal"] is True
    for branch in ("global_branch", "local_branch"):
        before, after = getattr(base.model, branch), getattr(pruned.model, branch)
        assert after.stem_widths == (before.stem_widths[0], *(w // 2 for w in before.stem_widths[1:]))
        for name, widths in after.widths.items():
            assert widths.ch3x3red == round(before.widths[name].ch3x3red / 2 + 1e-9)
    importance = {
        f"{branch}se.{name}": torch.rand(width)
        for branch, widths in channel_widths(base.model).items()
        for name, width in widths.items()
    }
    paper_only = prune_network(base.model, importance, 0.5)  # SEP-followed layers only, as in the paper
    x = example_inputs(pruned)
    assert count_macs(pruned.model, x) < count_macs(paper_only, x) < count_macs(base.model, x)
    assert get_pipeline("zhu2019").predict_records(out, trained["test"][:2], device="cpu")["hybrid"].probs.shape == (
        2,
        2,
    )


def test_an_interrupted_pruning_resumes(trained, tmp_path) -> None:
    options = PruneOptions(ratio=0.5)
    done = prune_model_folder(trained["folder"], tmp_path / "done", trained["train"][:4], options=options)
    (done / "model.json").unlink()  # as if killed after retraining, before the folder was written
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        prune_model_folder(trained["folder"], done, trained["train"][:4], options=options)
    resumed = prune_model_folder(trained["folder"], done, trained["train"][:4], options=options, resume=True)
    fresh = prune_model_folder(trained["folder"], tmp_path / "fresh", trained["train"][:4], options=options)
    for key, value in read_weights(fresh / "model.safetensors").items():
        torch.testing.assert_close(read_weights(resumed / "model.safetensors")[key], value)


def test_macs_and_parameters_fall_monotonically_with_the_ratio(trained) -> None:
    loaded = load_model_folder(trained["folder"])
    importance = {
        f"{branch}se.{name}": torch.rand(width)
        for branch, widths in channel_widths(loaded.model).items()
        for name, width in widths.items()
    }
    costs = []
    for ratio in (0.0, 0.25, 0.5, 0.7, 0.9, 0.95):
        model = prune_network(loaded.model, importance, per_loop_fraction(ratio, 1))
        costs.append((count_macs(model, example_inputs(loaded)), count_parameters(model)))
    macs, params = zip(*costs)
    assert all(a > b for a, b in zip(macs, macs[1:])) and all(a > b for a, b in zip(params, params[1:]))


def test_dns_after_channel_pruning_stores_sparse_weights(trained, tmp_path) -> None:
    options = PruneOptions(ratio=0.5, dns=True, dns_sensitivity=0.5)
    out = prune_model_folder(trained["folder"], tmp_path / "dns", trained["train"][:6], options=options)
    dense = read_weights(out / "model.safetensors")
    sparse = load_sparse_weights(out / "model.sparse.safetensors")
    assert dense.keys() == sparse.keys()
    for key in dense:
        torch.testing.assert_close(sparse[key], dense[key])
    conv = dense["global_branch.inception.4e.branch3x3.conv.conv.weight"]
    assert 0 < (conv == 0).float().mean() < 1  # surgery pruned some, not all, weights of the layer
    assert (out / "model.sparse.safetensors").stat().st_size < (out / "model.safetensors").stat().st_size
    record = json.loads((out / "pruning.json").read_text())["dns"]
    assert record["nonzero_parameters"] < count_parameters(load_model_folder(out).model)
    density = record["layer_density"]  # each surgically masked layer: the fraction of its weights kept
    key = "global_branch.inception.4e.branch3x3.conv.conv"
    assert density[key] == pytest.approx((conv != 0).float().mean().item())
    assert all(0.0 <= d <= 1.0 for d in density.values()) and min(density.values()) < 1.0


def test_training_records_come_from_the_experiment_or_data(trained, bach_root, tmp_path) -> None:
    loaded = load_model_folder(trained["folder"])
    train, val = training_records(loaded)
    assert sorted(r.image_id for r in train + val) == sorted(r.image_id for r in trained["train"])
    assert not {r.image_id for r in train} & {r.image_id for r in trained["test"]}
    train_all, val_all = training_records(loaded, bach_root)
    assert len(train_all) + len(val_all) == 80
    moved = tmp_path / "model"
    moved.mkdir()
    for item in trained["folder"].iterdir():
        (moved / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ConfigError, match="--data"):
        training_records(load_model_folder(moved))


def test_compression_study_measures_every_model(trained, tmp_path) -> None:
    cfg = trained["cfg"]
    options = PruneOptions(report_ratios=[0.0, 0.5], report_loops=[2], report_dns_sensitivities=[0.5])
    study = run_sweep(
        cfg,
        tmp_path / "study",
        trained["train"][:6],
        [],
        trained["test"][:6],
        trained["classes"],
        base=trained["folder"],
        options=options,
    )
    _, entries = read_sweep(study)
    assert [e.folder for e in entries] == ["ratio0", "ratio0.5", "ratio0.8_loops2", "dns0.5", "ratio0.5_dns0.5"]
    result = compression_report(study, latency_repeats=1)
    rows = {row["folder"]: row for row in result["rows"]}
    assert rows["ratio0.5"]["macs"] < rows["ratio0"]["macs"] == rows[str(trained["folder"].resolve())]["macs"]
    assert rows["ratio0.8_loops2"]["params"] < rows["ratio0.5"]["params"]
    assert rows["ratio0.5_dns0.5"]["remaining_weights"] < rows["ratio0.5"]["remaining_weights"]
    assert rows["dns0.5"]["nonzero_params"] < rows["dns0.5"]["params"]
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0 for row in rows.values())
    report = study / "report"
    assert {p.name for p in (report / "figures").glob("fig*.png")} == {
        "fig10_loops.png",
        "fig12_pruning_ratio.png",
        "fig13_dns.png",
    }
    assert "Pruning ratio O" in (report / "report.md").read_text()
