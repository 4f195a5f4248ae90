"""System A's maps (Zhu et al. 2019 hybrid): the global branch over the image, the local branch's
patch maps back on their grid, and the two fused with the model's own λ.

Both branches see exactly the inputs they classify (:class:`~histobreast.datasets.images.HybridDataset`).
Each patch's map is weighted by that patch's probability of the class explained, times
``P / kept`` (so the local map's mean carries the local vote's mean probability), and is 0 for the
patches the vote's confidence filter dropped (they are outlined as dropped); the global map is
weighted by the global probability. ``fused = λ local + (1 − λ) global``, the fusion of the
probabilities (paper A, eq. 1). Each stored map is then scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from histobreast.data.imageio import image_size
from histobreast.data.records import ImageRecord
from histobreast.datasets.images import HybridDataset
from histobreast.explain.cam import ExplainError, network_maps, rescale
from histobreast.explain.maps import DROPPED, Explanation, box_on_map, grid_boxes, map_size, resize_map
from histobreast.models.hybrid import HybridCNN
from histobreast.pipelines.package import LoadedModel
from histobreast.votes import fuse_branches, kept_patches, patch_vote


def explain_hybrid(
    loaded: LoadedModel, records: Sequence[ImageRecord], *, method: str, targets: Sequence[int | None] | None = None
) -> list[Explanation]:
    """Maps ``fused`` (headline), ``global`` and ``local`` of each record; ``targets[i]`` is the class
    to explain (None or absent: the hybrid's call)."""
    model = loaded.model
    if not isinstance(model, HybridCNN):
        raise ExplainError(f"{loaded.path}: pipeline zhu2019 needs a hybrid model, got {type(model).__name__}")
    pre = loaded.cfg.preprocess
    grid = tuple(pre.patches.grid)
    data = HybridDataset(
        records,
        loaded.classes,
        size=pre.input_size,
        grid=grid,  # type: ignore[arg-type]
        patch_size=pre.patches.size,
        stain=loaded.stain,
        require_labels=False,
    )
    device = next(model.parameters()).device
    weight = model.fusion_weight
    out = []
    for i, record in enumerate(records):
        size = image_size(record.path)
        if min(size) < pre.input_size:
            raise ExplainError(
                f"{record.path}: image {size[0]}x{size[1]} px is smaller than the model's field of view "
                f"(its global branch reads {pre.input_size} px); a map would locate evidence between pixels"
            )
        inputs, _ = data[i]
        whole, patches = inputs["global"][None].to(device), inputs["patches"].to(device)
        with torch.no_grad():
            branch = model.branch_outputs(whole, patches[None])
        global_probs, patch_probs = branch["global"].cpu(), branch["patches"].cpu()  # (1, C), (1, P, C)
        keep = kept_patches(patch_probs, model.min_spread)[0].numpy()
        probs = fuse_branches(patch_vote(patch_probs, model.patch_rule, model.min_spread), global_probs, weight)[0]
        target = targets[i] if targets is not None and targets[i] is not None else int(probs.argmax())
        shape = map_size(size)
        global_map = resize_map(network_maps(model.global_branch, whole, [target], method, str(loaded.path))[0], shape)
        patch_maps = network_maps(model.local_branch, patches, [target] * len(patches), method, str(loaded.path))
        tile_weights = patch_probs[0, :, target].numpy() * keep * (len(keep) / keep.sum())
        boxes = grid_boxes(size, grid)  # type: ignore[arg-type]
        local_map = np.zeros(shape[::-1], np.float32)
        for box, values, tile_weight in zip(boxes, patch_maps, tile_weights):
            x, y, w, h = box_on_map(box, size, shape)
            local_map[y : y + h, x : x + w] = tile_weight * resize_map(values, (w, h))
        fused = weight * local_map + (1.0 - weight) * float(global_probs[0, target]) * global_map
        dropped = [(box, DROPPED) for box, kept in zip(boxes, keep) if not kept]
        out.append(
            Explanation.of_record(
                record,
                classes=loaded.classes,
                probs=probs,
                target=target,
                method=method,
                image_size=size,
                maps={"fused": rescale(fused), "global": rescale(global_map), "local": rescale(local_map)},
                boxes={"fused": dropped, "local": dropped},
            )
        )
    return out
