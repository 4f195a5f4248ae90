"""System B's maps (Liu et al. 2022 MSMV-PFENet): each scale's map on its KREM crop, drawn where
the crop lies in the image, for each of the six views.

The crops are those the model votes with (:func:`histobreast.pipelines.liu2022.region_dataset`,
``top_k_test`` regions per view). One backward pass per image gives every (view, region, scale)
map: each encoder's last stage is one target layer. A crop's map is turned back from its view
(:func:`~histobreast.preprocess.views.invert_view`) and resized onto the crop's box in the raw image
(:func:`~histobreast.preprocess.views.view_box_to_raw`); regions of one view overlapping at a
scale are averaged. Maps ``<view>_level<L>`` hold those; the headline ``image`` is their mean over
views and scales (0 where no crop looked), scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from histobreast.data.records import ImageRecord
from histobreast.explain.cam import ExplainError, layer_maps, rescale
from histobreast.explain.maps import CROP, Box, Explanation, box_on_map, map_size, resize_map
from histobreast.models.msmv import MSMVPFENet
from histobreast.pipelines.liu2022 import region_dataset
from histobreast.pipelines.package import LoadedModel
from histobreast.preprocess.views import invert_view, view_box_to_raw
from histobreast.votes import combine_members


def explain_msmv(
    loaded: LoadedModel, records: Sequence[ImageRecord], *, method: str, targets: Sequence[int | None] | None = None
) -> list[Explanation]:
    """Maps ``image`` (headline) and ``<view>_level<L>`` of each record; ``targets[i]`` is the class to
    explain (None or absent: the six-view vote's call)."""
    model, cfg = loaded.model, loaded.cfg
    if not isinstance(model, MSMVPFENet):
        raise ExplainError(f"{loaded.path}: pipeline liu2022 needs an MSMV-PFENet, got {type(model).__name__}")
    coarsest = cfg.preprocess.regions.krem.scaled_windows
    cache = Path(cfg.preprocess.cache_dir) if cfg.preprocess.cache_dir else None
    data = region_dataset(
        cfg,
        records,
        loaded.classes,
        model.scales,
        train=False,
        cache_dir=cache,
        stain=loaded.stain,
        unknown_labels=True,
    )
    device = next(model.parameters()).device
    out = []
    for j, record in enumerate(records):
        size = data.image_sizes[j]
        window = coarsest(record.microns_per_pixel)[0][0]
        if window > min(size):
            raise ExplainError(
                f"{record.path}: image {size[0]}x{size[1]} px at {record.microns_per_pixel:g} µm/px is smaller than "
                f"the model's field of view (its coarsest key window, {window} px at that scale)"
            )
        samples = range(data.image_slices[j].start, data.image_slices[j].stop)
        crops = torch.stack([data[s][0] for s in samples]).to(device)  # (N, S, 3, h, w)
        with torch.no_grad():
            probs = model.predict_proba(crops).cpu()
        image_probs = combine_members(probs.unsqueeze(1), "majority")[0]  # the six-view vote
        target = targets[j] if targets is not None and targets[j] is not None else int(image_probs.argmax())
        maps = layer_maps(model, crops, [target] * len(crops), method, str(loaded.path))  # (N, S, h, w)
        shape = map_size(size)
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        boxes: dict[str, list[tuple[Box, str]]] = {}
        for n, s in enumerate(samples):
            view = data.views[int(data.sample_view[s])]
            region = data.regions(j, int(data.sample_view[s]))[int(data.sample_region[s])]
            for k, level in enumerate(model.scales):
                name = f"{view}_level{level}"
                raw_box = view_box_to_raw(region.boxes[level], view, size)
                x, y, w, h = box_on_map(raw_box, size, shape)
                placed = resize_map(invert_view(maps[n, k], view), (w, h))[: shape[1] - y, : shape[0] - x]
                total = sums.setdefault(name, np.zeros(shape[::-1], np.float32))
                seen = counts.setdefault(name, np.zeros(shape[::-1], np.float32))
                total[y : y + h, x : x + w] += placed
                seen[y : y + h, x : x + w] += 1
                boxes.setdefault(name, []).append((raw_box, CROP))
        placed_maps = {
            name: rescale(np.divide(total, counts[name], out=np.zeros_like(total), where=counts[name] > 0))
            for name, total in sums.items()
        }
        every_crop = [box for name in placed_maps for box in boxes[name]]
        out.append(
            Explanation.of_record(
                record,
                classes=loaded.classes,
                probs=image_probs,
                target=target,
                method=method,
                image_size=size,
                maps={"image": rescale(np.mean(list(placed_maps.values()), axis=0)), **placed_maps},
                boxes={"image": every_crop, **boxes},
            )
        )
    return out
