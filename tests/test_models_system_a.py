"""System A models: GoogLeNetSEP / GoogLeNet-BN, the hybrid model, the Spanhol patch CNN, ResNets."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
from torch import nn

from histobreast.compress.profile import count_macs, count_parameters
from histobreast.errors import ConfigError
from histobreast.models import create_model, list_models
from histobreast.models.googlenet_sep import GOOGLENET_WIDTHS, INCEPTION_NAMES, GoogLeNetSEP
from histobreast.models.hybrid import HybridCNN
from histobreast.models.layers import SEBlock
from histobreast.models.weights import save_weights

SMALL = 64  # px: the full network on tiny inputs keeps these tests fast


def test_registry_has_system_a_models() -> None:
    names = set(list_models())
    assert {
        "googlenet_sep",
        "googlenet_bn",
        "hybrid_googlenet_sep",
        "spanhol_patch_cnn",
        "resnet18",
        "resnet50",
    } <= names


@pytest.mark.parametrize("size", [SMALL, 96])
def test_googlenet_sep_outputs_logits_in_eval_and_aux_in_train(size: int) -> None:
    model = create_model("googlenet_sep", num_classes=3)
    x = torch.randn(2, 3, size, size)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 3)
    model.train()
    out = model(x)
    assert set(out) == {"logits", "aux"}
    assert out["logits"].shape == (2, 3)
    assert [a.shape for a in out["aux"]] == [(2, 3), (2, 3)]


def test_without_aux_heads_train_mode_returns_plain_logits() -> None:
    model = create_model("googlenet_sep", aux_logits=False).train()
    out = model(torch.randn(2, 3, SMALL, SMALL))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)
    assert count_parameters(model) == count_parameters(create_model("googlenet_sep"), exclude=("aux1", "aux2"))


def test_widths_of_every_inception_module_and_head() -> None:
    model = GoogLeNetSEP()
    outs = {name: model.inception[name].out_channels for name in INCEPTION_NAMES}
    assert outs == {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "4e": 832}
    assert model.fc.in_features == 832 + 512 + 512 + 528  # concat(4e, 4b, 4c, 4d) = 2384
    # The "5x5" branch is a real 5x5 conv.
    assert model.inception["4e"].branch5x5.conv.conv.kernel_size == (5, 5)
    # SE after every Inception module with r = 16 (528 -> 33 hidden units, as in the released net).
    assert [model.se[n].fc1.out_features for n in INCEPTION_NAMES] == [16, 30, 32, 32, 32, 33, 52]
    assert model.aux1.conv.conv.in_channels == 512 and model.aux2.conv.conv.in_channels == 528


def test_parameters_and_macs_at_224_match_design() -> None:
    """DESIGN.md: about 3.8 M parameters and 1.46 GMAC at 224 before pruning (aux heads excluded).

    We count 3.756 M (1.2 % under "about 3.8 M": DESIGN rounds; Caffe's conv biases, which add
    only ~5 k, are dropped here because BatchNorm follows every conv) and 1.460 GMAC.
    """
    model = GoogLeNetSEP(num_classes=2)
    params = count_parameters(model, exclude=("aux1", "aux2"))
    assert abs(params - 3.8e6) / 3.8e6 < 0.02
    # SE blocks by hand: sum over layers of 2 * C * C//16 + C//16 + C.
    se_params = sum(2 * c * (c // 16) + c // 16 + c for c in (256, 480, 512, 512, 512, 528, 832))
    assert count_parameters(model, exclude=[n for n, _ in model.named_children() if n != "se"]) == se_params
    # Each aux head: conv 512x128 (+BN 256) + FC 2048x1024+1024 + FC 1024x2+2.
    aux1 = 512 * 128 + 256 + 2048 * 1024 + 1024 + 1024 * 2 + 2
    assert count_parameters(model) - params == aux1 + aux1 + 16 * 128
    macs = count_macs(model, torch.randn(1, 3, 224, 224))
    assert abs(macs - 1.46e9) / 1.46e9 < 0.01


def test_googlenet_bn_has_no_se_blocks() -> None:
    model = create_model("googlenet_bn")
    assert not any(isinstance(m, SEBlock) for m in model.modules())
    assert model.model_kwargs["se"] is False
    with pytest.raises(ConfigError, match="googlenet_sep"):
        create_model("googlenet_bn", se=True)


def test_predict_proba_is_softmax_of_main_logits_in_both_modes() -> None:
    model = create_model("googlenet_sep", num_classes=3)
    x = torch.randn(2, 3, SMALL, SMALL)
    model.eval()
    with torch.no_grad():
        probs = model.predict_proba(x)
        expected = model(x).softmax(dim=-1)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    model.train()
    assert model.predict_proba(x).shape == (2, 3)


def test_model_kwargs_rebuild_the_same_network_through_json(tmp_path) -> None:
    widths = {name: list(w) for name, w in GOOGLENET_WIDTHS.items()}
    widths["4c"] = [100, 128, 200, 24, 40, 30]
    model = create_model(
        "googlenet_sep", num_classes=4, widths=widths, se_hidden={"4c": 7}, dropout=0.2, aux_widths=[16, 32]
    ).eval()
    kwargs = json.loads(json.dumps(model.model_kwargs))
    path = save_weights(model, tmp_path / "model.safetensors")
    rebuilt = create_model("googlenet_sep", weights=path, **kwargs).eval()
    assert rebuilt.inception["4c"].out_channels == 370 and rebuilt.se["4c"].fc1.out_features == 7
    assert rebuilt.aux2.conv.conv.out_channels == 16 and rebuilt.aux2.fc.out_features == 32
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"widths": {"3a": [64, 96, 128, 16, 32, 32]}}, "'widths'"),
        ({"widths": {**{n: list(w) for n, w in GOOGLENET_WIDTHS.items()}, "4b": [1, 2, 3]}}, "'widths.4b'"),
        (
            {"widths": {**{n: list(w) for n, w in GOOGLENET_WIDTHS.items()}, "4b": [160, 112, 0, 24, 64, 64]}},
            "'widths.4b'",
        ),
        ({"se_hidden": {"5a": 3}}, "'se_hidden'"),
        ({"aux_widths": [128]}, "'aux_widths'"),
        ({"aux_widths": [0, 1024]}, "'aux_widths'"),
    ],
)
def test_bad_widths_raise_config_errors_naming_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        create_model("googlenet_sep", **kwargs)


# ---------------------------------------------------------------------------------------------
# Hybrid model
# ---------------------------------------------------------------------------------------------


class FirstValuesAsLogits(nn.Module):
    """Stub branch: the first C input values are the logits, so inputs set exact probabilities."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, : self.classes]


def _images_with_probs(probs: list[list[float]]) -> torch.Tensor:
    """(N, 3, 2, 2) images whose first values are log-probabilities (softmax gives ``probs`` back)."""
    images = torch.zeros(len(probs), 3, 2, 2)
    images.view(len(probs), -1)[:, :2] = torch.tensor(probs).log()
    return images


def _hybrid(**kwargs) -> HybridCNN:
    return HybridCNN(FirstValuesAsLogits(), FirstValuesAsLogits(), **kwargs)


# Patches: [0.9, 0.1] and [0.7, 0.3] are kept; [0.55, 0.45] has max-min 0.1 < 0.3 and is dropped.
PATCH_PROBS = [[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]]
GLOBAL_PROBS = [[0.2, 0.8]]


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return _images_with_probs(GLOBAL_PROBS), _images_with_probs(PATCH_PROBS).unsqueeze(0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"mode": "global"}, [0.2, 0.8]),  # method 1
        ({"mode": "local"}, [0.8, 0.2]),  # method 2: mean of the two kept patches
        ({"mode": "hybrid"}, [0.6 * 0.8 + 0.4 * 0.2, 0.6 * 0.2 + 0.4 * 0.8]),  # method 3
        ({"mode": "local", "patch_rule": "max"}, [0.75, 0.25]),  # 2(Max): max [0.9, 0.3], renormalised
        ({"mode": "hybrid", "patch_rule": "max"}, [0.6 * 0.75 + 0.4 * 0.2, 0.6 * 0.25 + 0.4 * 0.8]),  # 3(Max)
        ({"mode": "local", "min_spread": None}, [(0.9 + 0.55 + 0.7) / 3, (0.1 + 0.45 + 0.3) / 3]),
        ({"mode": "hybrid", "fusion_weight": 0.655}, [0.655 * 0.8 + 0.345 * 0.2, 0.655 * 0.2 + 0.345 * 0.8]),
    ],
)
def test_hybrid_modes_and_rules_equal_hand_computed_values(kwargs, expected) -> None:
    global_images, patches = _inputs()
    probs = _hybrid(**kwargs)(global_images, patches)
    torch.testing.assert_close(probs, torch.tensor([expected]))


def test_hybrid_accepts_the_dataset_mapping_and_needs_only_what_its_mode_uses() -> None:
    global_images, patches = _inputs()
    hybrid = _hybrid()
    torch.testing.assert_close(hybrid({"global": global_images, "patches": patches}), hybrid(global_images, patches))
    torch.testing.assert_close(_hybrid(mode="global")(global_images), torch.tensor(GLOBAL_PROBS))
    torch.testing.assert_close(_hybrid(mode="local")(None, patches), torch.tensor([[0.8, 0.2]]))
    with pytest.raises(ValueError, match="patches"):
        hybrid(global_images)


def test_hybrid_branch_outputs_give_every_method_from_one_pass() -> None:
    global_images, patches = _inputs()
    outputs = _hybrid().branch_outputs(global_images, patches)
    torch.testing.assert_close(outputs["global"], torch.tensor(GLOBAL_PROBS))
    torch.testing.assert_close(outputs["patches"], torch.tensor([PATCH_PROBS]))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mode": "both"}, "'mode'"),
        ({"patch_rule": "median"}, "'patch_rule'"),
        ({"fusion_weight": 1.5}, "'fusion_weight'"),
    ],
)
def test_hybrid_rejects_bad_options(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        _hybrid(**kwargs)


def test_hybrid_googlenet_sep_builds_two_branches_and_rebuilds_from_kwargs(tmp_path) -> None:
    model = create_model("hybrid_googlenet_sep", num_classes=3, local_kwargs={"dropout": 0.1}).eval()
    assert model.global_branch is not model.local_branch
    global_images, patches = torch.randn(2, 3, SMALL, SMALL), torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        probs = model(global_images, patches)
    assert probs.shape == (2, 3)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    kwargs = json.loads(json.dumps(model.model_kwargs))
    assert kwargs["local_kwargs"]["dropout"] == 0.1 and kwargs["fusion_weight"] == 0.6
    rebuilt = create_model("hybrid_googlenet_sep", weights=save_weights(model, tmp_path / "h.safetensors"), **kwargs)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(global_images, patches), probs)


def test_hybrid_branch_class_count_must_agree() -> None:
    with pytest.raises(ConfigError, match="global_kwargs.num_classes"):
        create_model("hybrid_googlenet_sep", num_classes=2, global_kwargs={"num_classes": 4})


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "fc1_inputs"), [(32, 64 * 4 * 4), (64, 64 * 8 * 8)])
def test_spanhol_patch_cnn_layers_and_parameter_count(patch: int, fc1_inputs: int) -> None:
    model = create_model("spanhol_patch_cnn", patch_size=patch)
    convs = 3 * 32 * 25 + 32 + 32 * 32 * 25 + 32 + 32 * 64 * 25 + 64
    assert count_parameters(model) == convs + fc1_inputs * 64 + 64 + 64 * 2 + 2
    assert model(torch.randn(2, 3, patch, patch)).shape == (2, 2)
    assert model.model_kwargs == {"num_classes": 2, "patch_size": patch}
    with pytest.raises(ValueError, match="patch_size"):
        model(torch.randn(2, 3, patch * 2, patch * 2))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnets_keep_torchvision_keys_and_predict_probabilities(name: str) -> None:
    model = create_model(name, num_classes=3).eval()
    reference = getattr(torchvision.models, name)(weights=None, num_classes=3)
    assert list(model.state_dict()) == list(reference.state_dict())
    with torch.no_grad():
        probs = model.predict_proba(torch.randn(2, 3, SMALL, SMALL))
    assert probs.shape == (2, 3)
    assert math.isclose(probs.sum().item(), 2.0, rel_tol=1e-5)
