"""Self-supervised pre-training: the loss falls, the run resumes exactly after a kill, bad input is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from histobreast.config import build_dataclass
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.ssl_tiles import SSLTileDataset
from histobreast.errors import ConfigError
from histobreast.models.ssl import SSLLoss, SSLModel
from histobreast.models.weights import read_weights
from histobreast.pipelines.pretrain import pretrain_records, run_pretrain
from histobreast.pipelines.pretrain_config import PretrainRunConfig, load_pretrain_config
from tiny_system_a import TINY_BRANCH

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pretrain"
# System A's tiny test branches without their auxiliary heads (a trunk has none).
TINY_TRUNK = {k: v for k, v in TINY_BRANCH.items() if k != "aux_widths"}


def tiny_pretrain_config(root: Path, **sections: Any) -> PretrainRunConfig:
    """SimCLR on a tiny GoogLeNet-SEP trunk, 32 px tiles, fold 1 of 2; ``sections`` merge into the defaults."""
    raw: dict[str, Any] = {
        "name": "tiny_pretrain",
        "data": {"root": str(root), "fold": 1, "n_folds": 2},
        "pretrain": {
            "encoder": "googlenet_sep",
            "encoder_kwargs": TINY_TRUNK,
            "tile_size": 32,
            "tile_microns": 160.0,
            "tiles_per_image": 1,
            "hidden_dim": 32,
            "output_dim": 16,
        },
        "train": {
            "optimizer": "adamw",
            "lr": 3e-3,
            "batch_size": 8,
            "epochs": 4,
            "num_workers": 0,
            "device": "cpu",
            "progress": False,
            "tensorboard": False,
        },
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return build_dataclass(PretrainRunConfig, raw, source="test")


@pytest.fixture(scope="module")
def bach_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pretrain") / "bach"
    synth_bach(root, per_class=20, size=(128, 96), image_format="png", classes=("Normal", "Invasive"))
    return root


def test_fold_pretraining_reads_only_the_fold_training_images(bach_tree: Path) -> None:
    fold1 = {r.image_id for r in pretrain_records(tiny_pretrain_config(bach_tree))}
    fold2 = {r.image_id for r in pretrain_records(tiny_pretrain_config(bach_tree, data={"fold": 2}))}
    everything = {r.image_id for r in pretrain_records(tiny_pretrain_config(bach_tree, data={"fold": None}))}
    assert fold1 and fold2 and not fold1 & fold2  # two folds: each one's training images are the other's test
    assert fold1 | fold2 == everything and len(everything) == 40


def test_a_few_byol_steps_through_the_engine_lower_the_loss(bach_tree: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = tiny_pretrain_config(bach_tree, pretrain={"method": "byol"}, train={"epochs": 6})
    result = run_pretrain(cfg, tmp_path / "out")
    record = json.loads(result.record.read_text())
    losses = [row["train_loss"] for row in record["loss_history"]]  # one mean per epoch of 2 steps
    assert len(losses) == 6 and result.steps == 12
    assert max(losses[-2:]) < min(losses[:2]), losses
    assert record["method"] == "byol" and record["fold"] == 1 and record["final_loss"] == losses[-1]
    seen = {entry["id"] for entry in record["images"]}
    assert seen == {r.image_id for r in pretrain_records(cfg)}
    assert all(len(entry["sha256"]) == 64 for entry in record["images"])
    weights = read_weights(result.weights)
    assert not any(k.startswith(("fc.", "aux")) for k in weights) and "stem.conv1.conv.weight" in weights


#: DINO with two local crops; 40 px global and 32 px local tiles both pass GoogLeNet's pooling (>= 31 px).
TINY_DINO = {"method": "dino", "tile_size": 40, "local_views": 2, "local_size": 32, "output_dim": 64}


def test_a_few_dino_steps_through_the_engine_lower_the_loss(bach_tree: Path, tmp_path: Path) -> None:
    """DINO's loss falls fast while the student learns the teacher's targets (2.8 to below 1.2 here).

    It is not monotone after that: the centring that keeps DINO from collapsing raises the entropy
    of the teacher's targets, which the cross-entropy includes, so only the first epochs are checked.
    """
    torch.set_num_threads(1)
    cfg = tiny_pretrain_config(bach_tree, pretrain={**TINY_DINO, "momentum": [0.9, 0.9]}, train={"epochs": 4})
    result = run_pretrain(cfg, tmp_path / "out")
    record = json.loads(result.record.read_text())
    losses = [row["train_loss"] for row in record["loss_history"]]
    assert len(losses) == 4 and result.steps == 8
    assert max(losses[1:]) < 0.6 * losses[0], losses
    assert record["method"] == "dino" and record["config"]["pretrain"]["local_views"] == 2
    weights = read_weights(result.weights)
    assert not any(k.startswith(("fc.", "aux")) for k in weights) and "stem.conv1.conv.weight" in weights


def test_dino_crops_and_teacher(bach_tree: Path) -> None:
    """Items hold two global and the local crops; the teacher starts as the student and only sees global crops."""
    cfg = tiny_pretrain_config(bach_tree)
    dataset = SSLTileDataset(
        pretrain_records(cfg), tile_microns=160.0, tile_size=40, local_views=3, local_size=32, seed=0
    )
    views, _ = dataset[0]
    assert views["global"].shape == (2, 3, 40, 40) and views["local"].shape == (3, 3, 32, 32)
    torch.manual_seed(0)
    model = SSLModel("googlenet_sep", "dino", encoder_kwargs=TINY_TRUNK, hidden_dim=32, output_dim=16)
    teacher, student = model.projection_momentum.state_dict(), model.projection.state_dict()
    assert all(torch.equal(teacher[k], student[k]) for k in student)
    batch = {k: torch.stack([v, v]) for k, v in views.items()}
    output = model(batch)
    assert output.shape == (2 + 5, 2, 16)  # teacher on 2 global crops, student on 2 global + 3 local
    loss = SSLLoss("dino", dino=model.dino_loss)(output)
    assert torch.isfinite(loss) and model.dino_loss.center.abs().sum() > 0  # the centre moved
    with pytest.raises(ValueError, match="dino_loss"):
        SSLLoss("dino")


def test_a_few_simclr_steps_lower_the_loss_on_fixed_views(bach_tree: Path) -> None:
    """NT-Xent on one fixed batch of synthetic tiles' views falls within a few AdamW steps.

    (Through the engine, a few SimCLR steps do not show it: a new batch every step, and two views
    of a tile start less alike than two tiles, until the network has learnt the rotations; BACH's
    150-step run falls from 4.9 to 3.3.)
    """
    torch.set_num_threads(1)
    cfg = tiny_pretrain_config(bach_tree)
    dataset = SSLTileDataset(pretrain_records(cfg), tile_microns=160.0, tile_size=32, tiles_per_image=1, seed=0)
    views = torch.stack([dataset[i][0] for i in range(8)])
    torch.manual_seed(0)
    model = SSLModel("googlenet_sep", encoder_kwargs=TINY_TRUNK, hidden_dim=32, output_dim=16)
    loss_fn, optimizer = SSLLoss("simclr", 0.1), torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = loss_fn(model(views))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], losses


def run_until_killed(root: Path, out: Path, kill_at: int, method: str) -> None:
    """Script half of the hard-kill test: pre-train, SIGKILL the process after step ``kill_at``."""
    from histobreast.engine.trainer import Trainer

    fit = Trainer.fit

    def killing_fit(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        def kill(trainer: Trainer) -> None:
            if trainer.state.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        self.callbacks.append(kill)
        return fit(self, *args, **kwargs)

    Trainer.fit = killing_fit  # type: ignore[method-assign]
    torch.set_num_threads(1)
    run_pretrain(resume_config(root, method), out)


def resume_config(root: Path, method: str) -> PretrainRunConfig:
    pretrain = TINY_DINO if method == "dino" else {"method": method}
    return tiny_pretrain_config(root, pretrain=pretrain, train={"epochs": 3, "checkpoint_every": 2})


@pytest.mark.parametrize("method", ["byol", "dino"])  # both have a momentum teacher; DINO also its centre
def test_sigkilled_pretraining_resumes_to_identical_weights(bach_tree: Path, tmp_path: Path, method: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), *sys.path]))}
    proc = subprocess.run(
        [sys.executable, __file__, str(bach_tree), str(tmp_path / "killed"), "3", method],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (tmp_path / "killed" / "encoder.safetensors").exists()
    torch.set_num_threads(1)
    resumed = run_pretrain(resume_config(bach_tree, method), tmp_path / "killed", resume=True)
    reference = run_pretrain(resume_config(bach_tree, method), tmp_path / "reference")
    assert resumed.steps == reference.steps == 6
    a, b = read_weights(resumed.weights), read_weights(reference.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.final_loss == reference.final_loss


def test_bad_pretraining_input_is_refused_in_one_line(bach_tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("pretrain:\n  methd: simclr\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*pretrain\.methd"):
        load_pretrain_config(config)
    config.write_text("pretrain:\n  method: simclr\n  local_views: 2\n")
    with pytest.raises(ConfigError, match=r"pretrain\.local_views: local crops are DINO's"):
        load_pretrain_config(config)
    config.write_text("pretrain:\n  encoder: resnet999\n")
    with pytest.raises(ConfigError, match=r"pretrain\.encoder.*resnet999"):
        load_pretrain_config(config)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "a.png").write_bytes((bach_tree / "ICIAR2018_BACH_Challenge/Photos/Normal/n001.png").read_bytes())
    with pytest.raises(ConfigError, match=r"data\.microns_per_pixel: .*tiles is a folder of tiles without a scale"):
        pretrain_records(tiny_pretrain_config(tiles, data={"fold": None}))
    assert [
        r.image_id for r in pretrain_records(tiny_pretrain_config(tiles, data={"fold": None, "microns_per_pixel": 2.0}))
    ] == ["a"]
    with pytest.raises(ConfigError, match=r"--out .*lies inside the input folder"):
        run_pretrain(tiny_pretrain_config(bach_tree), bach_tree / "out")

    from histobreast.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "resnet999" in str(result.exception)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_pretraining_configs_load(path: Path) -> None:
    cfg = load_pretrain_config(path)
    assert cfg.data.fold == 1 and cfg.data.split == "contiguous"  # fold 1's training images, never a random split
    assert (cfg.train.device == "cpu") == path.stem.endswith("_cpu")


if __name__ == "__main__":
    run_until_killed(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
