"""Checkpoints: pickles refused, exact optimizer-state round trip, crash-safe file protocol, rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from histobreast.engine.checkpoint import (
    flatten_tensors,
    load_model,
    read_checkpoint,
    save_checkpoint,
    unflatten_tensors,
)
from histobreast.errors import CheckpointError
from histobreast.models.registry import register_model


@register_model("test_engine_checkpoint_mlp")
def _mlp(num_classes: int = 2, hidden: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def trained_optimizer(kind: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = _mlp()
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    )
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).sum().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pickled_checkpoints_are_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(_mlp().state_dict(), path)
    with pytest.raises(CheckpointError, match="pickled checkpoints are refused"):
        read_checkpoint(path).load_into(_mlp())
    with pytest.raises(CheckpointError, match="pickled checkpoints are refused"):
        read_checkpoint(path).state_dict()


def test_a_checkpoint_json_pointing_at_a_pickle_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, "best", model=_mlp(), step=1)
    torch.save(_mlp().state_dict(), tmp_path / "evil.pt")
    info = json.loads((tmp_path / "best.json").read_text())
    info["weights"] = "evil.pt"
    (tmp_path / "best.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="pickled checkpoints are refused"):
        read_checkpoint(tmp_path, "best").load_into(_mlp())
    info["weights"] = "../outside.safetensors"
    (tmp_path / "best.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="must be a file name in the same folder"):
        read_checkpoint(tmp_path, "best")


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_optimizer_state_round_trips_exactly_through_safetensors(tmp_path: Path, kind: str) -> None:
    model, opt = trained_optimizer(kind)
    state = {"optimizer": opt.state_dict(), "rng": [{"torch": torch.get_rng_state(), "python": [3, [1, 2], None]}]}
    save_checkpoint(tmp_path, "last", model=model, step=3, info={"note": "x"}, state=state)
    text = (tmp_path / "last.json").read_text()
    assert "momentum_buffer" in text or "exp_avg" in text  # names in the JSON, values in safetensors
    assert len(text) < 20_000
    restored = read_checkpoint(tmp_path, "last").trainer_state()
    _, fresh = trained_optimizer(kind)
    fresh.load_state_dict(restored["optimizer"])
    original, loaded = opt.state_dict(), fresh.state_dict()
    assert loaded["param_groups"] == original["param_groups"]  # tuples (betas) and int keys survive
    for index, slots in original["state"].items():
        for name, value in slots.items():
            assert torch.equal(torch.as_tensor(loaded["state"][index][name]), torch.as_tensor(value)), (index, name)
    assert torch.equal(restored["rng"][0]["torch"], state["rng"][0]["torch"])


def test_flatten_rejects_unstorable_objects() -> None:
    skeleton, tensors = flatten_tensors({"a": (1, torch.ones(2)), 3: [None, "s"]})
    assert skeleton == {"__items__": [["a", {"__tuple__": [1, {"__tensor__": "state.a.1"}]}], [3, [None, "s"]]]}
    assert unflatten_tensors(skeleton, tensors)["a"][0] == 1
    with pytest.raises(TypeError, match="cannot store a object"):
        flatten_tensors({"x": object()})


def test_new_checkpoint_replaces_old_files_and_json_always_points_at_complete_ones(tmp_path: Path) -> None:
    model = _mlp()
    save_checkpoint(tmp_path, "last", model=model, step=4, state={"k": torch.ones(1)})
    first = read_checkpoint(tmp_path, "last")
    # A crash after the new weights were written but before the JSON moved: the JSON still points at step 4.
    (tmp_path / "last-step00000005.model.safetensors").write_bytes(b"partial")
    assert read_checkpoint(tmp_path, "last").weights_path == first.weights_path
    with torch.no_grad():
        model[0].weight.add_(1.0)
    save_checkpoint(tmp_path, "last", model=model, step=6, state={"k": torch.ones(1)})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last-step00000006.model.safetensors", "last-step00000006.state.safetensors", "last.json"]
    assert torch.equal(read_checkpoint(tmp_path, "last").state_dict()["0.weight"], model[0].weight)


def test_load_model_rebuilds_from_name_and_kwargs(tmp_path: Path) -> None:
    model = _mlp(num_classes=3, hidden=7)
    save_checkpoint(
        tmp_path / "checkpoints",
        "best",
        model=model,
        step=2,
        info={"model_name": "test_engine_checkpoint_mlp", "model_kwargs": {"num_classes": 3, "hidden": 7}},
    )
    rebuilt, checkpoint = load_model(tmp_path)  # a run folder: finds checkpoints/best.json
    assert checkpoint.step == 2 and checkpoint.model_kwargs == {"num_classes": 3, "hidden": 7}
    x = torch.randn(2, 3)
    assert torch.equal(rebuilt(x), model(x))
    save_checkpoint(tmp_path / "bare", "best", model=model, step=2)
    with pytest.raises(CheckpointError, match="records no model_name"):
        load_model(tmp_path / "bare")


def test_missing_and_foreign_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no `best` checkpoint here"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not a histobreast checkpoint"):
        read_checkpoint(tmp_path / "other.json")
    save_checkpoint(tmp_path, "best", model=_mlp(), step=1)
    with pytest.raises(CheckpointError, match="holds no trainer state"):
        read_checkpoint(tmp_path, "best").trainer_state()
    next(tmp_path.glob("best-step*.model.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="weights file .* is missing"):
        read_checkpoint(tmp_path, "best")
