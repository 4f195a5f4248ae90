"""The main job (`histobreast demo`): config lookup, the summary report, and (slow) the whole run."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.demo import (
    BREAKHIS_MAGNIFICATION,
    DEFAULT_CONFIG_DIR,
    DEMO_FOLDERS,
    SYSTEM_A_CONFIG,
    SYSTEM_B_CONFIG,
    clear_previous_demo,
    run_demo,
)
from histobreast.demo_report import DemoResult, write_demo_report
from histobreast.errors import ConfigError


def test_demo_configs_exist_in_the_source_tree() -> None:
    assert (DEFAULT_CONFIG_DIR / SYSTEM_A_CONFIG).is_file()
    assert (DEFAULT_CONFIG_DIR / SYSTEM_B_CONFIG).is_file()


def test_a_new_demo_replaces_only_the_earlier_demos_folders(tmp_path: Path) -> None:
    for name in DEMO_FOLDERS:
        (tmp_path / name / "fold1").mkdir(parents=True)
        (tmp_path / name / "fold1" / "last.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    assert clear_previous_demo(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "other"]
    # A demo that cannot start (no configs) removes nothing.
    (tmp_path / "system_a").mkdir()
    with pytest.raises(ConfigError):
        run_demo(tmp_path, config_dir=tmp_path / "nowhere", say=lambda _: None)
    assert (tmp_path / "system_a").is_dir()


def test_missing_config_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere.*zhu2019_synthetic\.yaml: demo config not found"):
        run_demo(tmp_path / "out", config_dir=tmp_path / "nowhere", say=lambda _: None)


def test_summary_report_holds_every_stage(tmp_path: Path) -> None:
    costs = {"params": 1000, "macs": 5000, "latency_ms": 2.0, "size_bytes": 4000}
    result = DemoResult(
        tmp_path,
        tmp_path / "report",
        0.5,
        numbers={
            "system_a/hybrid": {"mean": 0.8, "std": 0.05},
            "system_b/image": {"mean": 0.55, "std": float("nan")},
            "compression/unpruned": {**costs, "accuracy": 0.75},
            "compression/pruned": {**costs, "params": 480, "accuracy": 0.74},
            "ensemble/sum": 0.9,
            "ensemble/members": {"member1": 0.8, "member2": 0.85},
            "review/flagged": 3,
            "review/images": 12,
        },
        seconds={"System A: train and evaluate": 80.0},
    )
    paths = write_demo_report(result, chance={"system_a": 0.5, "system_b": 0.25})
    text = paths["markdown"].read_text()
    assert "| System A, method hybrid | 0.800 ± 0.050 |" in text
    assert "| pruned | 480 |" in text
    assert "Ensemble of 2 (sum rule)" in text and "member2" in text
    assert "3 of 12 flagged" in text
    assert f"synthetic BreaKHis {BREAKHIS_MAGNIFICATION}X" in text  # issue 22: it said 40X of a 200X run
    assert paths["html"].is_file() and paths["metrics"].is_file()


def test_demo_help() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--out" in result.output


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole demo twice: ~2 min each alone, far longer on a busy machine
def test_whole_demo_beats_chance(tmp_path: Path) -> None:
    result = run_demo(tmp_path, say=lambda _: None)
    assert result.numbers["system_a/hybrid"]["mean"] > 0.6  # 2 classes
    assert result.numbers["system_b/image"]["mean"] > 0.35  # 4 classes
    assert (result.report_dir / "report.md").is_file()
    cards = list((tmp_path / "review" / "figures").glob("case*.png"))
    assert len(cards) == result.numbers["review/images"] > 0
    # `make demo` again in the same folder: the earlier demo is replaced, with the same numbers.
    again = run_demo(tmp_path, say=lambda _: None)
    assert again.numbers["system_a/hybrid"] == result.numbers["system_a/hybrid"]
    assert again.numbers["system_b/image"] == result.numbers["system_b/image"]
