"""End to end on synthetic BACH images: KREM crops -> MSMV-PFENet, joint training lowers the loss,
and evaluation gives patch-level (per view) and image-level (six-view vote) predictions."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from histobreast.data.bach import BACH_CLASSES
from histobreast.data.synthetic import synth_bach
from histobreast.datasets.key_regions import TEST_TOP_K, KeyRegionDataset
from histobreast.models import create_model
from histobreast.preprocess.krem import KremParams
from histobreast.votes import image_predictions, view_predictions

PARAMS = KremParams(output_size=32)  # paper windows (scaled to 1.68 µm/px), tiny crops for the CPU


def test_a_few_joint_training_steps_lower_the_loss_and_evaluation_votes_per_image(tmp_path) -> None:
    torch.manual_seed(0)
    records = synth_bach(tmp_path / "bach", per_class=1, size=(512, 384))
    model = create_model("msmv_pfenet", num_classes=4, encoder="resnet18")  # paper layout, cheap encoder
    train = KeyRegionDataset(
        records,
        BACH_CLASSES,
        top_k=2,
        views=("raw", "rot180"),
        levels=model.scales,
        params=PARAMS,
        cache_dir=tmp_path / "cache",
        preload=True,
    )
    crops, targets = next(iter(DataLoader(train, batch_size=len(train))))
    assert crops.shape == (16, 3, 3, 32, 32)
    # Paper B's optimiser: SGD, momentum 0.9, weight decay 1e-4, lr 0.01.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(crops), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    test = KeyRegionDataset(
        records, BACH_CLASSES, top_k=TEST_TOP_K, levels=model.scales, params=PARAMS, cache_dir=tmp_path / "cache"
    )
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model.predict_proba(x) for x, _ in DataLoader(test, batch_size=16)])
    per_view = view_predictions(test, probs)
    per_image = image_predictions(test, probs)
    assert len(per_view) == 4 * 6 and len(per_image) == 4
    assert per_image.image_ids == [r.image_id for r in records]
    # The image label is the majority of its six view labels.
    for j, part in enumerate(test.image_slices):
        votes = torch.bincount(torch.as_tensor(per_view.predicted[part]), minlength=4)
        assert votes[per_image.predicted[j]] == votes.max()
