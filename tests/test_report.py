"""Report tables, plots and the Markdown/HTML/JSON writer assert real content."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histobreast import metrics as M
from histobreast.config import to_jsonable
from histobreast.errors import HistobreastError
from histobreast.predictions import Predictions
from histobreast.report import (
    Report,
    RunInfo,
    ablation_table,
    accuracy_table,
    compression_table,
    confusion_table,
    ensemble_table,
    f1_table,
    levels_table,
    plot_confusion_matrix,
    plot_lines,
    plot_per_class_scores,
    plot_roc_curves,
    plot_training_curves,
)
from histobreast.report.plots import read_numeric_csv
from histobreast.report.tables import format_cell

P_MALIGNANT = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.6])


def binary_predictions() -> Predictions:
    """The test_metrics example: IL 4/6, PL 0.625, kappa 0.25, PPV 0.75, AUC 7/8."""
    return Predictions(
        classes=["benign", "malignant"],
        image_ids=[f"img{i}" for i in range(6)],
        probs=np.stack([1 - P_MALIGNANT, P_MALIGNANT], axis=1),
        labels=[1, 1, 1, 1, 0, 0],
        patient_ids=["P1"] * 4 + ["P2"] * 2,
        magnifications=[40, 40, 100, 100, 100, 100],
    )


def run_info() -> RunInfo:
    return RunInfo(
        dataset="synthetic BreaKHis",
        split="fold 1 of 5",
        model="hybrid",
        config="configs/demo.yaml",
        command="histobreast evaluate runs/demo --data data/",
        date="2024-01-02T03:04:05+00:00",
        machine="test machine, 2 CPUs",
    )


def assert_png(path: Path, min_bytes: int = 5000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 200
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 5  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary file


def fold_summary() -> dict:
    folds = [
        {"metrics": {"patient_level_accuracy": 0.5, "image_level_accuracy": 0.6, "kappa": 0.2, "ppv": 0.7}},
        {"metrics": {"patient_level_accuracy": 0.7, "image_level_accuracy": 0.8, "kappa": 0.4, "ppv": 0.9}},
    ]
    return M.summarise_folds(folds)


@pytest.mark.parametrize(
    "value, fmt, text",
    [
        (0.91234, ".3f", "0.912"),
        ({"mean": 0.6, "std": math.sqrt(0.02)}, ".3f", "0.600 ± 0.141"),
        ({"mean": 0.6, "std": math.nan}, ".3f", "0.600"),
        ({"estimate": 0.9, "low": 0.85, "high": 0.95}, ".2f", "0.90 (0.85–0.95)"),
        (0.948, ".1%", "94.8%"),
        (1234, ",.0f", "1,234"),
        (None, ".3f", "–"),
        (math.nan, ".3f", "–"),
        ("PFENet", ".3f", "PFENet"),
    ],
)
def test_format_cell(value, fmt, text):
    assert format_cell(value, fmt) == text


def test_accuracy_table_per_magnification_markdown_and_html():
    ev = M.by_magnification(binary_predictions())
    table = accuracy_table({"global": {40: fold_summary(), 100: fold_summary()}, "hybrid": {40: ev[40]}}, "Table 3")
    md = table.to_markdown()
    assert "| Method | 40X PL | 40X IL | 40X Kappa | 40X PPV | 100X PL |" in md
    assert "| 1 (global) | 0.600 ± 0.141 | 0.700 ± 0.141 | 0.300 ± 0.141 | 0.800 ± 0.141 |" in md
    # hybrid at 40X: 2 malignant images, both right -> PL = IL = PPV = 1; kappa undefined (one class)
    assert "| 3 (hybrid) | 1.000 | 1.000 | – | 1.000 | – | – | – | – |" in md
    html = table.to_html()
    assert '<th rowspan="2">Method</th><th colspan="4">40X</th><th colspan="4">100X</th>' in html
    assert '<td class="num">0.600 ± 0.141</td>' in html and "<td>1 (global)</td>" in html


def test_single_column_table_for_bach_and_f1_table():
    ev = M.evaluate_predictions(binary_predictions())
    md = accuracy_table({"hybrid": {None: ev}}, "Table 2").to_markdown()
    assert "| Method | PL | IL | Kappa | PPV |" in md
    assert "| 3 (hybrid) | 0.625 | 0.667 | 0.250 | 0.750 |" in md
    assert "colspan" not in accuracy_table({"hybrid": {None: ev}}, "Table 2").to_html()
    assert "| 3 (hybrid) | 0.750 | 0.750 | 0.750 |" in f1_table({"hybrid": {None: ev}}, "Table 4").to_markdown()


def test_unknown_metric_in_result_is_an_error():
    with pytest.raises(KeyError, match="metrics/kappa"):
        accuracy_table(
            {"hybrid": {None: {"metrics": {"patient_level_accuracy": 1.0, "image_level_accuracy": 1.0}}}}, "T"
        )


def test_confusion_ensemble_and_levels_tables():
    ev = M.evaluate_predictions(binary_predictions())
    md = confusion_table(ev).to_markdown()
    assert "| benign | 1 | 1 | 2 |" in md and "| malignant | 1 | 3 | 4 |" in md
    weaker = {**ev, "metrics": {**ev["metrics"], "image_level_accuracy": 0.5}}
    table = ensemble_table({"member 1": weaker, "member 2": weaker}, ev, "sum")
    assert "| Ensemble (sum) | 0.667 | 0.625 | 0.250 | 0.750 | 0.875 |" in table.to_markdown()
    assert "+0.167 against the best member (member 1)" in table.caption
    levels = levels_table(weaker, ev).to_markdown()
    assert "| Level | Accuracy | Precision | Recall | F1 | Kappa |" in levels
    assert "| Image level (six-view vote) | 0.667 | 0.750 | 0.750 | 0.750 | 0.250 |" in levels


def test_compression_table_scales_units_and_computes_speedup():
    rows = [
        {
            "ratio": 0.0,
            "params": 6_000_000,
            "macs": 1.5e9,
            "size_bytes": 24 * 2**20,
            "latency_ms": 30.0,
            "accuracy": 0.9,
        },
        {
            "ratio": 0.5,
            "params": 2_500_000,
            "macs": 0.6e9,
            "size_bytes": 10 * 2**20,
            "latency_ms": 15.0,
            "accuracy": {"mean": 0.89, "std": 0.01},
            "pruned_layers": 57,
        },
    ]
    table = compression_table(rows)
    md = table.to_markdown()
    assert (
        "| Pruning ratio O | Parameters (M) | MACs (G) | Size (MiB) | CPU latency (ms/image) | Speed-up (×) | Accuracy |"
        in md
    )
    assert "| 0.00 | 6.00 | 1.500 | 24.0 | 30.0 | 1.00 | 0.900 |" in md
    assert "| 0.50 | 2.50 | 0.600 | 10.0 | 15.0 | 2.00 | 0.890 ± 0.010 |" in md
    assert "pruned_layers" in md  # an unknown key is reported, not dropped silently


def test_ablation_table_paper_b_layout_marks_best():
    rows = [
        {"encoder": "Single FENet", "discriminator": "FC", "patch_accuracy": 0.843, "image_accuracy": 0.854},
        {"encoder": "PFENet", "discriminator": "BiLSTM × 2", "patch_accuracy": 0.93, "image_accuracy": 0.948},
    ]
    md = ablation_table(rows).to_markdown()
    assert "| Feature encoding | Discrimination | Patch (%) | Image (%) |" in md
    assert "| --- | --- | ---: | ---: |" in md
    assert "| Single FENet | FC | 84.3% | 85.4% |" in md and "| PFENet (best) | BiLSTM × 2 | 93.0% | 94.8% |" in md
    with pytest.raises(ValueError, match="ablation rows \\[0\\]"):
        ablation_table([{"encoder": "VGG16", "discriminator": "FC", "patch_accuracy": 0.788}])


def test_a_table_read_back_from_metrics_json_renders_the_same() -> None:
    from histobreast.report.tables import Table

    rows = [
        {
            "encoder": "PFENet",
            "discriminator": "FC",
            "patch_accuracy": {"mean": 0.387, "std": 0.089},
            "image_accuracy": 0.394,
        }
    ]
    table = ablation_table(rows)
    table.notes.append("frozen encoders")
    again = Table.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.to_markdown() == table.to_markdown() and "38.7% ± 8.9%" in again.to_markdown()


def test_plots_write_valid_pngs(tmp_path):
    pred = binary_predictions()
    ev = M.evaluate_predictions(pred)
    assert_png(plot_confusion_matrix(ev["confusion_matrix"], ev["classes"], tmp_path / "cm.png"))
    curves = M.roc_curves(pred)
    assert list(curves) == ["40X", "100X"] and math.isnan(curves["40X"]["auc"])  # 40X: malignant only
    assert_png(plot_roc_curves(curves, tmp_path / "roc.png"))
    per_class = {**ev["per_class"], "normal": {"precision": math.nan, "recall": 0.0, "f1": 0.0}}
    assert_png(plot_per_class_scores(per_class, tmp_path / "bars.png"))
    assert_png(
        plot_lines(
            [0, 0.25, 0.5, 0.9],
            {"accuracy": [0.9, 0.91, 0.9, math.nan]},
            tmp_path / "acc.png",
            xlabel="pruning ratio O",
            ylabel="accuracy",
        )
    )


def test_training_curves_from_csv(tmp_path):
    log = tmp_path / "log.csv"
    lines = ["epoch,step,train_loss,val_loss,val_accuracy,lr,phase"]
    for step in range(1, 21):
        epoch = (step - 1) // 5
        val = f"{1.2 - 0.05 * step:.3f},{0.5 + 0.02 * step:.3f}" if step % 5 == 0 else ","
        lines.append(f"{epoch},{step},{1.5 - 0.06 * step:.3f},{val},{0.1 * 0.9**step:.5f},train")
    log.write_text("\n".join(lines) + "\n")
    columns = read_numeric_csv(log)
    assert set(columns) == {"epoch", "step", "train_loss", "val_loss", "val_accuracy", "lr"}  # "phase" is text
    assert np.isnan(columns["val_loss"]).sum() == 16
    assert_png(plot_training_curves(log, tmp_path / "curves.png"))
    with pytest.raises(HistobreastError, match="training log not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    (tmp_path / "empty.csv").write_text("epoch,train_loss\n")
    with pytest.raises(HistobreastError, match="has no rows"):
        plot_training_curves(tmp_path / "empty.csv", tmp_path / "x.png")


def test_report_writes_markdown_html_json_with_content(tmp_path):
    pred = binary_predictions()
    ev = M.evaluate_predictions(pred)
    report = Report(tmp_path / "report", "Hybrid model on synthetic BreaKHis", run_info())
    report.add_evaluation("Test set", ev, pred)
    report.add_table(accuracy_table({"hybrid": M.by_magnification(pred)}, "Table 3: accuracy per magnification"))
    paths = report.write()

    md = paths["markdown"].read_text()
    for text in (
        "# Hybrid model on synthetic BreaKHis",
        "| Dataset | synthetic BreaKHis |",
        "| Split / fold | fold 1 of 5 |",
        "| Config | configs/demo.yaml |",
        "| Machine | test machine, 2 CPUs |",
        "`histobreast evaluate runs/demo --data data/`",
        "benign 2, malignant 4",
        "PPV, recall, F1 and AUC: positive class 'malignant'.",
        "| Test set | 0.667 | 0.625 | 0.250 | 0.750 | 0.750 | 0.750 | 0.875 |",
        "| malignant | 1 | 3 | 4 |",
        "![Test set: ROC curves (40X, 100X).](figures/test_set_roc.png)",
        "_3 (hybrid), 40X: ROC and AUC of class 'malignant' undefined: the ground truth has no negatives_",
        "_3 (hybrid), 40X: kappa undefined: chance agreement is 1",
        "- PL: patient-level accuracy: mean over patients",
    ):
        assert text in md, text
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "<caption>Test set: summary</caption>" in html and '<td class="num">0.875</td>' in html
    assert '<img src="figures/test_set_confusion.png"' in html and "Command to regenerate" in html
    for name in ("test_set_confusion.png", "test_set_roc.png", "test_set_per_class.png"):
        assert_png(tmp_path / "report" / "figures" / name)

    data = json.loads(paths["metrics"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["run"]["dataset"] == "synthetic BreaKHis"
    assert data["results"]["Test set"]["metrics"]["auc"] == pytest.approx(0.875)
    assert data["tables"][-1]["rows"][0]["40/kappa"] is None  # NaN kappa at 40X written as null
    assert not list((tmp_path / "report").glob(".*.tmp"))


def test_report_copies_outside_figures_and_notes_undefined_values(tmp_path):
    outside = plot_lines(
        [1, 2, 3], {"acc": [0.5, 0.6, 0.7]}, tmp_path / "elsewhere" / "curve.png", xlabel="R", ylabel="acc"
    )
    pred = Predictions(
        classes=["Normal", "Benign", "InSitu", "Invasive"],
        image_ids=["a", "b", "c"],
        probs=[[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]],
        labels=[0, 1, 2],
        patient_ids=["p1", "p2", "p3"],
    )
    report = Report(tmp_path / "out", "BACH", run_info())
    report.add_evaluation("Four classes", M.evaluate_predictions(pred), pred).add_figure(outside, "Accuracy against R")
    md = report.to_markdown()
    assert "- precision of 'InSitu' undefined: never predicted" in md
    assert "- recall of 'Invasive' undefined: no true images" in md
    report.write()
    assert (tmp_path / "out" / "figures" / "curve.png").read_bytes() == outside.read_bytes()
    assert "![Accuracy against R](figures/curve.png)" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(HistobreastError, match="figure file not found"):
        report.add_figure(tmp_path / "nope.png", "missing")
    with pytest.raises(ValueError, match="already added"):
        report.add_metrics("Four classes", {})


def test_run_info_defaults_and_jsonable():
    info = RunInfo(dataset="d", split="s", model="m", config="c")
    assert info.machine and "CPUs" in info.machine and info.date[:2] == "20"
    assert to_jsonable({"a": np.float32(1.5), "b": [math.nan, np.int64(2)], 3: np.array([1, 2])}) == {
        "a": 1.5,
        "b": [None, 2],
        "3": [1, 2],
    }
