"""Maps of one Spanhol et al. 2016 baseline member: its patch maps back on the sliding windows.

A member classifies an image by its sliding-window patches (:mod:`histobreast.pipelines.spanhol2016`:
the image stain-normalised, scaled by ``spanhol.scale``, cut into ``patch_size`` windows with
``overlap``, the patch probabilities combined by ``patch_rule``). Each patch's map is weighted by
that patch's probability of the class explained (as System A's local patches are) and placed at its
window; where windows overlap their maps are averaged. The fused baseline is an ensemble folder
(max rule): :func:`histobreast.explain.api.explain_ensemble` combines its members' maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histobreast.data.imageio import image_size
from histobreast.data.records import ImageRecord
from histobreast.datasets.spanhol_patches import image_patch_batches, load_scaled, sliding_positions
from histobreast.explain.cam import network_maps, rescale
from histobreast.explain.maps import Explanation, map_size, resize_map
from histobreast.pipelines.package import LoadedModel
from histobreast.pipelines.spanhol2016 import member_settings
from histobreast.votes import combine_members


def explain_spanhol_member(
    loaded: LoadedModel, records: Sequence[ImageRecord], *, method: str, targets: Sequence[int | None] | None = None
) -> list[Explanation]:
    """The map ``patches`` of each record; ``targets[i]`` is the class to explain (None or absent: the call)."""
    settings = member_settings(loaded.info)
    model = loaded.model.eval()
    device = next(model.parameters()).device
    size, overlap = settings["patch_size"], settings["overlap"]
    out = []
    for i, record in enumerate(records):
        image = load_scaled(record, settings["scale"], loaded.stain)
        batches = image_patch_batches(image, size, overlap, settings["eval_batch_size"])
        with torch.no_grad():
            patch_probs = torch.cat([model.predict_proba(b.to(device)).float().cpu() for b in batches])
        probs = combine_members(patch_probs[:, None, :], settings["patch_rule"])[0]
        target = targets[i] if targets is not None and targets[i] is not None else int(probs.argmax())
        total = np.zeros(image.shape[:2], np.float32)
        count = np.zeros(image.shape[:2], np.float32)
        positions = sliding_positions(image.shape[0], image.shape[1], size, overlap)
        start = 0
        for batch in batches:
            maps = network_maps(model, batch.to(device), [target] * len(batch), method, str(loaded.path))
            for (y, x), values, p in zip(positions[start : start + len(batch)], maps, patch_probs[start:, target]):
                total[y : y + size, x : x + size] += float(p) * values
                count[y : y + size, x : x + size] += 1.0
            start += len(batch)
        averaged = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        raw_size = image_size(record.path)
        out.append(
            Explanation.of_record(
                record,
                classes=loaded.classes,
                probs=probs,
                target=target,
                method=method,
                image_size=raw_size,
                maps={"patches": rescale(resize_map(averaged, map_size(raw_size)))},
            )
        )
    return out
