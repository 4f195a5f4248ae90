"""MSMV-PFENet: encoder factory, PFENet/FDNet shapes, the documented LSTM read-out, Table 4 variants."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models

from histobreast.errors import CheckpointError, ConfigError
from histobreast.models import create_model, list_models
from histobreast.models.encoders import ENCODERS, build_encoder
from histobreast.models.msmv import (
    DEFAULT_SCALES,
    TABLE4_VARIANTS,
    BiLSTMDiscriminator,
    FCDiscriminator,
    MSMVPFENet,
    _encoder_input,
    table4_variant,
)
from histobreast.models.weights import save_weights
from histobreast.preprocess.transforms import normalize

SIZE = 64  # tiny crops keep every test cheap; all encoders pool adaptively


def crops(batch: int, scales: int, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, scales, 3, size, size)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "googlenet"])
def test_encoder_pools_to_one_vector_of_the_documented_width(name: str) -> None:
    encoder = build_encoder(name).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, ENCODERS[name].out_features)
    # Frozen mode encodes with random weights and initial BatchNorm statistics: the features must
    # still tell two crops apart (GoogLeNet's own init gave ~1e-12 for every crop).
    assert (out[0] - out[1]).abs().mean() > 1e-3


def test_resnet50_pfenet_gives_three_2048_d_vectors_and_class_scores() -> None:
    model = create_model("msmv_pfenet", num_classes=4).eval()  # paper defaults: 3 x ResNet50 + BiLSTM x 2
    assert model.scales == (0, 1, 2)
    assert len(model.encoders) == 3
    assert model.encoders[0].conv1.weight.data_ptr() != model.encoders[1].conv1.weight.data_ptr()  # own weights
    lstm = model.discriminator.lstm
    assert (lstm.num_layers, lstm.bidirectional, lstm.hidden_size, lstm.input_size) == (2, True, 256, 2048)
    x = crops(2, 3)
    with torch.no_grad():
        features = model.encode(x)
        logits = model(x)
    assert features.shape == (2, 3, 2048)
    assert logits.shape == (2, 4)
    probs = model.predict_proba(x)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(probs, logits.softmax(dim=1))


def test_bilstm_reads_the_final_forward_and_backward_hidden_states() -> None:
    head = BiLSTMDiscriminator(in_features=8, num_classes=3, hidden=5, num_layers=2).eval()
    seq = torch.randn(4, 3, 8)
    with torch.no_grad():
        out, _ = head.lstm(seq)  # (B, S, 2 * hidden): forward half, then backward half
        # Forward direction after the last (finest) scale; backward direction after the first (coarsest).
        expected = head.fc(torch.cat([out[:, -1, :5], out[:, 0, 5:]], dim=1))
        torch.testing.assert_close(head(seq), expected)
        # It is a sequence model: reversing the scale order changes the scores.
        assert not torch.allclose(head(seq), head(seq.flip(1)))


def test_fc_discriminator_is_one_linear_layer_on_the_concatenated_vectors() -> None:
    head = FCDiscriminator(in_features=2, n_scales=3, num_classes=2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 0]]))
        head.fc.bias.copy_(torch.tensor([0.5, -1.0]))
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    # row 0: 1*1 + 2*6 + 0.5 = 13.5; row 1: -1
    torch.testing.assert_close(head(features), torch.tensor([[13.5, -1.0]]))


def test_single_and_double_fenet_read_the_documented_levels() -> None:
    single = MSMVPFENet(encoder="resnet18", n_encoders=1, discriminator="fc")
    double = MSMVPFENet(encoder="resnet18", n_encoders=2, discriminator="fc")
    assert single.scales == DEFAULT_SCALES[1] == (0,)
    assert double.scales == DEFAULT_SCALES[2] == (0, 2)
    assert MSMVPFENet(encoder="resnet18", n_encoders=1, scales=[2]).scales == (2,)
    with pytest.raises(ValueError, match=r"\(batch, 2 scales, 3, H, W\)"):
        double(crops(2, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_encoders": 4}, "n_encoders must be 1, 2 or 3"),
        ({"n_encoders": 2, "scales": [0, 1, 2]}, "has 3 entries but n_encoders=2"),
        ({"n_encoders": 2, "scales": [2, 0]}, "coarse first"),
        ({"discriminator": "svm"}, "SVMDiscriminator"),
        ({"discriminator": "gru"}, "unknown discriminator"),
        ({"encoder": "resnet9"}, "unknown encoder 'resnet9'"),
        ({"lstm_layers": 0}, "lstm_layers >= 1"),
    ],
)
def test_bad_options_raise_config_errors_naming_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("msmv_pfenet", num_classes=4, **{"encoder": "resnet18", **kwargs})


def test_registry_lists_the_model_and_table4_has_the_papers_ten_rows() -> None:
    assert "msmv_pfenet" in list_models()
    assert [v.key for v in TABLE4_VARIANTS] == [
        "single_fenet_fc",
        "double_fenet_fc",
        "vgg16_fc",
        "googlenet_fc",
        "resnet101_fc",
        "pfenet_fc",
        "pfenet_svm",
        "pfenet_bilstm1",
        "pfenet_bilstm2",
        "pfenet_bilstm3",
    ]
    best = table4_variant("pfenet_bilstm2")
    assert (best.paper_patch, best.paper_image) == (93.0, 94.8)
    assert table4_variant("pfenet_svm").svm_features_of == "pfenet_fc"
    with pytest.raises(ConfigError, match="unknown Table 4 variant"):
        table4_variant("pfenet_gru")


@pytest.mark.parametrize("variant", [v for v in TABLE4_VARIANTS if v.svm_features_of is None], ids=lambda v: v.key)
def test_every_table4_network_builds_and_takes_a_training_step(variant) -> None:
    torch.manual_seed(0)
    model = create_model("msmv_pfenet", num_classes=4, **variant.model_kwargs).train()
    x, target = crops(2, len(model.scales)), torch.tensor([1, 3])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed[-2:])  # the discriminator's output layer learned
    assert sum(changed) > len(changed) // 2  # and so did the encoders (end to end)


def test_channels_last_model_gives_the_same_scores() -> None:
    model = MSMVPFENet(encoder="resnet18").eval()
    x = crops(2, 3)
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        crop = _encoder_input(x[:, 0], model.encoders[0], model.uint8_mean, model.uint8_std)
        assert crop.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x), reference, atol=1e-4, rtol=1e-4)


def test_uint8_crops_are_normalised_by_the_model() -> None:
    model = MSMVPFENet(encoder="resnet18").eval()
    raw = torch.randint(0, 256, (2, 3, 3, SIZE, SIZE), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(raw), model(normalize(raw.float() / 255)), rtol=1e-5, atol=1e-5)
    assert "uint8_mean" not in model.state_dict()  # not a weight


def test_a_local_torchvision_weights_file_initialises_every_encoder(tmp_path) -> None:
    torch.manual_seed(1)
    full = models.resnet18(weights=None)  # a classifier-carrying torchvision file, as users have them
    path = save_weights(full, tmp_path / "resnet18.safetensors")
    model = MSMVPFENet(encoder="resnet18", encoder_weights=path)
    for encoder in model.encoders:
        torch.testing.assert_close(encoder.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
        torch.testing.assert_close(encoder.bn1.running_var, full.bn1.running_var)
    truncated = {k: v for k, v in full.state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(CheckpointError, match="missing"):
        build_encoder("resnet18", save_weights(truncated, tmp_path / "partial.safetensors"))


def test_whole_model_weights_round_trip_through_create_model(tmp_path) -> None:
    model = create_model("msmv_pfenet", num_classes=4, encoder="resnet18", lstm_layers=1).eval()
    path = save_weights(model, tmp_path / "msmv.safetensors")
    again = create_model("msmv_pfenet", num_classes=4, encoder="resnet18", lstm_layers=1, weights=path).eval()
    x = crops(1, 3)
    torch.testing.assert_close(again(x), model(x))
