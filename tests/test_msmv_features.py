"""Frozen-encoder mode (cached pooled features == the live encoders) and the SVM discriminator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import histobreast.engine.features as features_module
from histobreast.data.bach import BACH_CLASSES
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.key_regions import KeyRegionDataset
from histobreast.engine.features import FeatureDataset, SVMDiscriminator, encoder_fingerprint, extract_features
from histobreast.errors import ConfigError
from histobreast.models import create_model
from histobreast.models.msmv import MSMVPFENet, build_discriminator, table4_variant
from histobreast.preprocess.krem import KremParams
from histobreast.votes import image_predictions


@pytest.fixture
def dataset(tmp_path) -> KeyRegionDataset:
    """One synthetic BACH image per class at 512x384; 2 views x 2 regions of 32 px crops = 16 samples."""
    records = synth_bach(tmp_path / "bach", per_class=1, size=(512, 384), image_format="png")
    return KeyRegionDataset(records, BACH_CLASSES, top_k=2, views=("raw", "rot90"), params=KremParams(output_size=32))


def test_cached_frozen_features_equal_the_live_encoders(dataset, tmp_path, monkeypatch) -> None:
    model = MSMVPFENet(num_classes=4, encoder="resnet18").train()
    cache = tmp_path / "features"
    frozen = extract_features(model, dataset, cache, batch_size=5)
    assert model.training  # the caller's mode is restored
    assert len(frozen) == len(dataset) == 16
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            live = model.encode(dataset[i][0].unsqueeze(0))[0]
            torch.testing.assert_close(frozen[i][0], live, rtol=1e-5, atol=1e-5)
            assert frozen[i][1] == dataset[i][1]

    def must_not_run(*args, **kwargs):
        raise AssertionError("encoders ran although their features are cached")

    monkeypatch.setattr(features_module, "encode_samples", must_not_run)
    again = extract_features(model, dataset, cache)
    np.testing.assert_array_equal(again.features, frozen.features)
    # New encoder weights are a new cache key: the features must be computed again.
    with torch.no_grad():
        model.encoders[2].conv1.weight.add_(0.01)
    with pytest.raises(AssertionError, match="encoders ran"):
        extract_features(model, dataset, cache)


def test_encoder_fingerprint_follows_the_weights_and_ignores_the_discriminator() -> None:
    model = MSMVPFENet(encoder="resnet18")
    before = encoder_fingerprint(model)
    with torch.no_grad():
        model.discriminator.fc.bias.add_(1.0)
    assert encoder_fingerprint(model) == before
    with torch.no_grad():
        model.encoders[1].bn1.running_mean.add_(1e-3)
    assert encoder_fingerprint(model) != before


def test_levels_must_match_the_models_scales(dataset) -> None:
    single = MSMVPFENet(encoder="resnet18", n_encoders=1)
    with pytest.raises(ConfigError, match="levels=model.scales"):
        extract_features(single, dataset)


def test_training_only_the_discriminator_on_cached_features(dataset, tmp_path) -> None:
    torch.manual_seed(0)
    model = MSMVPFENet(num_classes=4, encoder="resnet18")
    frozen = extract_features(model, dataset, tmp_path / "features")
    encoders_before = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    x, y = torch.from_numpy(frozen.features), torch.from_numpy(frozen.targets)
    optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model.discriminator(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    for k, v in model.encoders.state_dict().items():
        assert torch.equal(v, encoders_before[k])
    # The trained discriminator is the full model's head: the model's scores match the cached path.
    model.eval()
    with torch.no_grad():
        live = torch.cat([model(dataset[i][0].unsqueeze(0)) for i in range(4)])
    torch.testing.assert_close(live, model.discriminator(x[:4]), rtol=1e-4, atol=1e-4)


def clustered_features(rng: np.random.Generator, labels: list[int]) -> np.ndarray:
    """(N, 3, 4) features with one well-separated cluster per class."""
    centres = rng.normal(0, 5, (4, 3, 4))
    return np.stack([centres[c] + rng.normal(0, 0.3, (3, 4)) for c in labels])


def test_svm_separates_clusters_and_its_probabilities_agree_with_svc() -> None:
    rng = np.random.default_rng(0)
    labels = [c for c in range(4) for _ in range(10)]
    x = clustered_features(rng, labels)
    svm = SVMDiscriminator(num_classes=4).fit(x, labels)
    probs = svm.predict_proba(x)
    assert probs.shape == (40, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert svm.predict(x).tolist() == labels
    noise = rng.normal(0, 5, (50, 3, 4))  # off-cluster points: arg-max still equals SVC.predict
    assert svm.predict(noise).tolist() == svm.pipeline.predict(noise.reshape(50, -1)).tolist()
    platt = SVMDiscriminator(num_classes=4, probability=True).fit(x, labels)
    np.testing.assert_allclose(platt.predict_proba(x).sum(axis=1), 1.0)
    assert svm.params() == {"kernel": "rbf", "C": 1.0, "gamma": "scale", "probability": False, "standardize": True}


def test_svm_gives_zero_to_classes_it_never_saw_and_handles_two_classes() -> None:
    rng = np.random.default_rng(1)
    labels = [0] * 8 + [2] * 8
    x = clustered_features(rng, labels)
    probs = SVMDiscriminator(num_classes=4).fit(x, labels).predict_proba(x)
    assert np.all(probs[:, [1, 3]] == 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.argmax(axis=1).tolist() == labels
    with pytest.raises(ConfigError, match="at least two classes"):
        SVMDiscriminator(num_classes=4).fit(x[:8], labels[:8])
    with pytest.raises(ConfigError, match="before fit"):
        SVMDiscriminator(num_classes=4).predict_proba(x)


@pytest.mark.parametrize(
    "labels",
    [[c for c in range(4) for _ in range(10)], [0] * 8 + [2] * 8, [0] * 6 + [1] * 6 + [3] * 6],
    ids=["four", "two", "three-of-four"],
)
def test_a_fitted_svm_exported_as_a_module_gives_the_same_probabilities(labels: list[int]) -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (4, 3, 4))
    x = np.stack([centres[c] + rng.normal(0, 1.0, (3, 4)) for c in labels])  # overlapping: margins matter
    svm = SVMDiscriminator(num_classes=4).fit(x, labels)
    head = svm.to_module(in_features=4, n_scales=3)
    queries = rng.normal(0, 1.5, (60, 3, 4))
    with torch.no_grad():
        probs = head.predict_proba(torch.as_tensor(queries, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(probs, svm.predict_proba(queries), atol=1e-6)
    rebuilt = build_discriminator(
        "svm", 4, 3, 4, svm_support_vectors=len(head.support_vectors), svm_seen_classes=len(head.classes)
    )
    rebuilt.load_state_dict(head.state_dict())  # the shapes follow from the two model kwargs
    with pytest.raises(ConfigError, match="Platt"):
        SVMDiscriminator(num_classes=4, probability=True).fit(x, labels).to_module(4, 3)


def test_table4_pfenet_svm_fits_on_the_pooled_features_of_its_pfenet(dataset, tmp_path) -> None:
    variant = table4_variant("pfenet_svm")
    source = table4_variant(variant.svm_features_of)
    model = create_model("msmv_pfenet", num_classes=4, **source.model_kwargs)  # 3 x ResNet50 + FC
    frozen = extract_features(model, dataset, tmp_path / "features", batch_size=8)
    assert frozen.features.shape == (16, 3, 2048)
    svm = SVMDiscriminator(num_classes=4).fit_features(frozen)
    probs = svm.predict_proba(frozen.features)
    images = image_predictions(dataset, probs)  # 2 views x 2 regions vote per image
    assert images.probs.shape == (4, 4)
    assert (svm.predict(frozen.features) == frozen.targets).mean() > 0.9  # it fits its training set


def test_feature_dataset_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, S, D\)"):
        FeatureDataset(np.zeros((4, 6)), np.zeros(4))
