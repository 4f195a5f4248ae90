"""Maps of the plain whole-image classifier (``pipeline: image``, e.g. the ResNet18 baseline).

The network sees the input it classifies (:func:`histobreast.pipelines.image.image_dataset`): the
image resized to a square, or brought to the model's µm/px whole; the map is resized back over
the image. A physical-scale model needs the rescaled image to cover its training crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from histobreast.data.imageio import image_size
from histobreast.data.records import ImageRecord
from histobreast.explain.cam import ExplainError, network_maps
from histobreast.explain.maps import Explanation, map_size, resize_map
from histobreast.pipelines.image import image_dataset
from histobreast.pipelines.package import LoadedModel


def explain_classifier(
    loaded: LoadedModel, records: Sequence[ImageRecord], *, method: str, targets: Sequence[int | None] | None = None
) -> list[Explanation]:
    """The map ``image`` of each record; ``targets[i]`` is the class to explain (None or absent: the call)."""
    model, pre = loaded.model, loaded.cfg.preprocess
    data = image_dataset(loaded.cfg, records, loaded.classes, train=False, stain=loaded.stain, require_labels=False)
    device = next(model.parameters()).device
    out = []
    for i, record in enumerate(records):
        inputs = data[i][0][None].to(device)
        seen = tuple(inputs.shape[-2:])
        if pre.microns_per_pixel is not None and min(seen) < pre.input_size:
            raise ExplainError(
                f"{record.path}: at the model's {pre.microns_per_pixel:g} µm/px the image is {seen[1]}x{seen[0]} px, "
                f"smaller than the model's field of view ({pre.input_size} px crops)"
            )
        with torch.no_grad():
            probs = model.predict_proba(inputs)[0].cpu()
        target = targets[i] if targets is not None and targets[i] is not None else int(probs.argmax())
        size = image_size(record.path)
        values = network_maps(model, inputs, [target], method, str(loaded.path))[0]
        out.append(
            Explanation.of_record(
                record,
                classes=loaded.classes,
                probs=probs,
                target=target,
                method=method,
                image_size=size,
                maps={"image": resize_map(values, map_size(size))},
            )
        )
    return out
