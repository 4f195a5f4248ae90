"""``histobreast explain`` and ``predict --review --explain`` on tiny System A models: System A's
three maps (agreeing with the pipeline's probabilities, dropped patches empty), ensembles' rules,
the files written, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.data.synthetic import synth_bach
from histobreast.data.task_records import experiment_records
from histobreast.errors import ConfigError
from histobreast.explain import ExplainError, explain
from histobreast.explain.cam import rescale
from histobreast.explain.maps import DROPPED, map_size
from histobreast.pipelines import zhu2019
from histobreast.pipelines.bagging import save_ensemble_folder
from histobreast.pipelines.package import load_model_folder
from histobreast.votes import kept_patches
from tiny_system_a import one_torch_thread, tiny_zhu_config  # noqa: F401 (autouse fixture)

runner = CliRunner()


@pytest.fixture(scope="module")
def system_a(tmp_path_factory):
    """Two tiny hybrids (different seeds) trained on 12 synthetic BACH images (96x64), 4 images to explain,
    and an ensemble folder holding both (sum rule)."""
    root = tmp_path_factory.mktemp("xa")
    synth_bach(root / "bach", per_class=4, size=(96, 64), image_format="png")
    records, classes = experiment_records(tiny_zhu_config(root / "bach").data)
    members = []
    for seed in (0, 1):
        cfg = tiny_zhu_config(root / "bach", seed=seed, train={"iterations": 3})
        members.append(zhu2019.train_fold(cfg, records[:12], [], classes, root / "ens" / f"member{seed + 1}"))
    ensemble = save_ensemble_folder(root / "ens", members, "sum", classes=classes)
    return root, members, ensemble, records[12:]


def test_system_a_maps_follow_the_hybrid_s_own_probabilities_and_vote(system_a) -> None:
    _, (folder, _), _, records = system_a
    loaded = load_model_folder(folder)
    expected = zhu2019.predict_records(loaded, records, device="cpu")["hybrid"]
    found = explain(loaded, records, device="cpu")
    for i, one in enumerate(found):
        assert list(one.maps) == ["fused", "global", "local"] and one.method == "gradcam"
        assert all(m.shape == map_size(one.image_size)[::-1] == (64, 96) for m in one.maps.values())
        assert np.allclose(one.probs, expected.probs[i], atol=1e-5) and one.target == expected.predicted[i]
        assert all(m.max() == pytest.approx(1.0) for m in one.maps.values())

    # A confidence filter between the two patches' spreads drops the less sure one: its half of the
    # local map is empty and outlined as dropped; the probabilities still follow the pipeline's.
    data = zhu2019.HybridDataset(records[:1], loaded.classes, size=32, grid=(2, 1), patch_size=32, require_labels=False)
    inputs, _ = data[0]
    patch_probs = loaded.model.patch_proba(inputs["patches"][None]).detach()
    spreads = (patch_probs.amax(-1) - patch_probs.amin(-1))[0].tolist()
    loaded.model.min_spread = sum(spreads) / 2
    dropped = 1 - int(kept_patches(patch_probs, loaded.model.min_spread)[0].int().argmax())
    (one,) = explain(loaded, records[:1], targets=[1])
    half = slice(48 * dropped, 48 * dropped + 48)
    assert not one.maps["local"][:, half].any() and one.maps["local"].any() and one.target_class == "carcinoma"
    assert one.boxes["local"] == [((48 * dropped, 0, 48, 64), DROPPED)]
    refit = zhu2019.predict_records(loaded, records[:1], device="cpu")["hybrid"]
    assert np.allclose(one.probs, refit.probs[0], atol=1e-5)


def test_an_ensemble_combines_its_members_maps_by_its_rule(system_a) -> None:
    _, members, ensemble, records = system_a
    voted = explain(ensemble, records[:2], device="cpu")
    assert [list(e.maps) for e in voted] == [["ensemble", "member1", "member2"]] * 2
    singles = [explain(m, records[:2], targets=[e.target for e in voted], device="cpu") for m in members]
    for i, one in enumerate(voted):
        assert np.allclose(one.maps["member1"], singles[0][i].maps["fused"])
        mean = rescale((singles[0][i].maps["fused"] + singles[1][i].maps["fused"]) / 2)
        assert np.allclose(one.maps["ensemble"], mean, atol=1e-6)
    manifest = json.loads((ensemble / "ensemble.json").read_text())
    (ensemble / "ensemble.json").write_text(json.dumps({**manifest, "rule": "max"}))
    try:
        (one, *_) = explain(ensemble, records[:1], device="cpu")
        both = np.maximum(one.maps["member1"], one.maps["member2"])
        assert np.allclose(one.maps["ensemble"], rescale(both), atol=1e-6)
    finally:
        (ensemble / "ensemble.json").write_text(json.dumps(manifest))


def test_explain_writes_figures_raw_maps_and_a_manifest(system_a, tmp_path) -> None:
    _, (folder, _), _, records = system_a
    images = [str(r.path) for r in records[:2]]
    result = runner.invoke(
        app,
        ["explain", str(folder), *images, "--out", str(tmp_path / "x"), "--method", "gradcam++"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "2 images explained" in result.output and "gradcam++ map of" in result.output
    manifest = json.loads((tmp_path / "x" / "explanations.json").read_text())
    entry = manifest["images"][0]
    assert entry["method"] == "gradcam++" and entry["headline"] == "fused" and entry["map_size"] == [96, 64]
    assert set(entry["maps"]) == {"fused", "global", "local"} and entry["class_explained"] in entry["probabilities"]
    fused = np.load(tmp_path / "x" / entry["maps"]["fused"])
    assert fused.dtype == np.float32 and fused.shape == (64, 96) and fused.max() == pytest.approx(1.0)
    figure = Image.open(tmp_path / "x" / entry["figure"])
    assert figure.width > 2 * figure.height  # three panels side by side and the colour bar


def test_predict_review_explain_puts_the_map_on_every_card(system_a, tmp_path) -> None:
    _, (folder, _), _, records = system_a
    images = [str(r.path) for r in records[:2]]
    plain, explained = tmp_path / "plain", tmp_path / "explained"
    for review, extra in ((plain, []), (explained, ["--explain"])):
        args = ["predict", str(folder), *images, "--out", str(tmp_path / "p.csv"), "--review", str(review), *extra]
        assert runner.invoke(app, args, catch_exceptions=False).exit_code == 0
    assert "gradcam map of" in (explained / "report.md").read_text()
    for card in (explained / "figures").glob("case*.png"):
        # the map beside the thumbnail: many strongly saturated (jet) pixels the pale tissue lacks
        before, after = (
            (np.asarray(Image.open(path).convert("HSV"))[..., 1] > 150).sum()
            for path in (plain / "figures" / card.name, card)
        )
        assert after > before + 2000
    refused = runner.invoke(app, ["predict", str(folder), *images, "--out", str(tmp_path / "q.csv"), "--explain"])
    assert isinstance(refused.exception, ConfigError) and "add --review" in str(refused.exception)


def test_bad_inputs_give_one_line_each(system_a, tmp_path, monkeypatch) -> None:
    from histobreast.explain import api
    from histobreast.explain.cam import target_layers

    _, (folder, _), _, records = system_a
    image = str(records[0].path)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((20, 24, 3), 120, np.uint8)).save(small)
    cases = [
        ([str(folder), image, "--method", "magic"], ConfigError, "unknown map method 'magic'; choose one of gradcam"),
        ([str(folder), image, "--class", "tumour"], ConfigError, "--class: 'tumour' is not one of the model's classes"),
        ([str(folder), str(small)], ExplainError, "24x20 px is smaller than the model's field of view"),
    ]
    for args, error, message in cases:
        result = runner.invoke(app, ["explain", *args, "--out", str(tmp_path / "x")])
        assert isinstance(result.exception, error) and message in str(result.exception), result.exception
        assert "\n" not in str(result.exception)
    assert not (tmp_path / "x").exists()  # nothing written for a refused run
    # Every pipeline has maps today; a model kind without one (a pipeline, or a network naming no
    # target layer) is refused in one line.
    monkeypatch.delitem(api.EXPLAINERS, "zhu2019")
    result = runner.invoke(app, ["explain", str(folder), image, "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, ExplainError) and "model kind 'zhu2019' has no map" in str(result.exception)
    with pytest.raises(ExplainError, match="model kind Sequential has no class activation map"):
        target_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)), "net.safetensors")


@pytest.mark.realdata
def test_explain_writes_overlays_for_a_real_bach_image(bach_dir, tmp_path) -> None:
    """A tiny hybrid trained for a few steps on 8 real BACH images explains a real one (1024x768)."""
    cfg = tiny_zhu_config(bach_dir, train={"iterations": 3})
    records, classes = experiment_records(cfg.data)
    train = records[:4] + records[-4:]  # both classes of the binary task
    folder = zhu2019.train_fold(cfg, train, [], classes, tmp_path / "fold")
    image = records[len(records) // 2].path
    result = runner.invoke(
        app, ["explain", str(folder), str(image), "--out", str(tmp_path / "x")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "x" / "explanations.json").read_text())["images"]
    assert entry["image_size"] == [1024, 768] and entry["map_size"] == [512, 384]
    assert np.load(tmp_path / "x" / entry["maps"]["fused"]).shape == (384, 512)
    assert Image.open(tmp_path / "x" / entry["figure"]).width > 1000
