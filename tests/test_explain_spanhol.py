"""Maps of the Spanhol et al. 2016 baseline (each member's sliding-window patch maps, the max-rule
fused baseline) and of a majority-rule ensemble (only the members that voted for the class count)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from histobreast.data.synthetic import synth_bach
from histobreast.explain import explain
from histobreast.explain.cam import rescale
from histobreast.explain.maps import map_size
from histobreast.pipelines import spanhol2016
from histobreast.pipelines.bagging import predict_ensemble, read_ensemble_folder, save_ensemble_folder
from histobreast.pipelines.config import parse_config
from tiny_system_a import one_torch_thread  # noqa: F401 (autouse fixture)

CLASSES = ["Normal", "Invasive"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The four-member max-rule baseline trained 2 steps on 4 synthetic 96x72 images; 2 images to explain."""
    root = tmp_path_factory.mktemp("spanhol")
    records = synth_bach(root / "bach", per_class=3, size=(96, 72), classes=tuple(CLASSES))
    train = {"iterations": 2, "batch_size": 8, "num_workers": 0, "device": "cpu", "tensorboard": False}
    cfg = parse_config(
        {
            "name": "spanhol_tiny",
            "pipeline": "spanhol2016",
            "model": {"name": "spanhol_patch_cnn"},
            "train": {**train, "progress": False},
            "spanhol": {"patch_sizes": [16, 32], "random_patches": 6, "scale": 0.5},
        }
    )
    folder = spanhol2016.train_fold(cfg, records[:4], [], CLASSES, root / "fold")
    return folder, records[4:]


def test_member_maps_follow_the_member_s_own_probabilities(baseline) -> None:
    folder, records = baseline
    member = folder / "patch16_sliding"
    expected = spanhol2016.predict_records(member, records)["image"]
    found = explain(member, records, device="cpu")
    for i, one in enumerate(found):
        assert list(one.maps) == ["patches"] and one.image_size == (96, 72)
        assert one.maps["patches"].shape == map_size(one.image_size)[::-1] == (72, 96)
        assert np.allclose(one.probs, expected.probs[i], atol=1e-5) and one.target == expected.predicted[i]
        assert one.maps["patches"].max() == pytest.approx(1.0) and one.maps["patches"].min() >= 0.0


def test_the_fused_baseline_is_the_members_maps_by_the_max_rule(baseline) -> None:
    folder, records = baseline
    names = read_ensemble_folder(folder).member_names()
    voted = explain(folder, records, device="cpu")
    fused = spanhol2016.predict_records(folder, records)["max_fusion"]
    for i, one in enumerate(voted):
        assert list(one.maps) == ["ensemble", *names]
        assert np.allclose(one.probs, fused.probs[i], atol=1e-5)
        single = explain(folder / names[2], records[i : i + 1], targets=[one.target], device="cpu")[0]
        assert np.allclose(one.maps[names[2]], single.maps["patches"])
        assert np.allclose(one.maps["ensemble"], rescale(np.max([one.maps[n] for n in names], axis=0)), atol=1e-6)


def _always(member, destination, class_index: int):
    """A copy of ``member`` whose last layer's bias makes it call ``class_index`` for these inputs, by
    a margin of about 4 logits (not more: a map is weighted by its class's probability, so a member
    sure of the other class would add almost nothing whether it were counted or not)."""
    shutil.copytree(member, destination)
    weights = load_file(destination / "model.safetensors")
    (bias,) = [k for k in weights if k.endswith("fc2.bias")]
    weights[bias] = weights[bias] - 2.0
    weights[bias][class_index] += 4.0
    save_file(weights, destination / "model.safetensors")
    return destination


def test_a_majority_ensemble_averages_only_the_members_that_voted_for_the_class(baseline, tmp_path) -> None:
    folder, records = baseline
    sources = [("patch16_sliding", 1), ("patch16_random", 1), ("patch32_sliding", 0)]  # three different networks
    members = [_always(folder / name, tmp_path / "maj" / f"m{i}", c) for i, (name, c) in enumerate(sources)]
    ensemble = save_ensemble_folder(tmp_path / "maj", members, "majority", classes=CLASSES)
    assert (predict_ensemble(ensemble, records).ensemble.predicted == 1).all()
    for target, voters in ((None, ["m0", "m1"]), (0, ["m2"])):
        # EigenCAM (activations' first principal component): never all zero, unlike the Grad-CAM of a
        # network trained two steps, so every member's map counts if it is counted
        chosen = None if target is None else [target]
        (one,) = explain(ensemble, records[:1], targets=chosen, method="eigencam", device="cpu")
        assert all(one.maps[n].max() > 0 for n in ("m0", "m1", "m2"))
        assert one.target == (1 if target is None else 0)
        expected = rescale(np.mean([one.maps[n] for n in voters], axis=0))
        assert np.allclose(one.maps["ensemble"], expected, atol=1e-6)
        everyone = rescale(np.mean([one.maps[n] for n in ("m0", "m1", "m2")], axis=0))
        assert np.abs(one.maps["ensemble"] - everyone).max() > 0.01  # counting the non-voters would change it
    assert json.loads((ensemble / "ensemble.json").read_text())["rule"] == "majority"
