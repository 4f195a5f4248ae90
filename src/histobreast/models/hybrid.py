"""Zhu et al. 2019's hybrid CNN: a global branch on the whole image and a local branch on patches.

The global branch sees the image resized to 224 px; the local branch classifies each of the 15
patches of the 5x3 grid; patch probabilities are voted (mean, or the "Max" ablation rule, after
the released code's max-min confidence filter) and fused with the global probabilities,
``P = lambda * P_local + (1 - lambda) * P_global`` (paper A, eq. 1; lambda = 0.6 in the paper,
about 0.655 effective in the released ``vote.ipynb``; the default here is the paper's 0.6).

The paper's methods are modes of one model: method 1 = ``mode="global"``, method 2 =
``mode="local"``, method 3 = ``mode="hybrid"``; "2(Max)"/"3(Max)" add ``patch_rule="max"``.
``branch_outputs`` returns every ingredient of one pass, so an evaluation can score all five
methods from a single forward.

The branches are trained separately, as in the paper: the global branch on whole images, the
local branch on single patches labelled with their image's label. Build each as
``create_model("googlenet_sep", ...)``, train it, then assemble ``HybridCNN(global, local)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from histobreast.errors import ConfigError
from histobreast.models.fusion import DEFAULT_FUSION_WEIGHT, DEFAULT_MIN_SPREAD, PatchRule, fuse_branches, patch_vote
from histobreast.models.googlenet_sep import GoogLeNetSEP
from histobreast.models.registry import register_model

HYBRID_MODES = ("hybrid", "global", "local")
PATCH_RULES = ("mean", "max")


def _branch_proba(model: nn.Module, images: Tensor) -> Tensor:
    output = model(images)
    logits = output["logits"] if isinstance(output, Mapping) else output
    return logits.softmax(dim=-1)


class HybridCNN(nn.Module):
    """Global + local branch with patch voting and weighted fusion; returns probabilities.

    ``forward(global_images, patches)`` takes ``(B, 3, H, W)`` and ``(B, P, 3, h, w)`` (or one
    mapping ``{"global": ..., "patches": ...}``, the dataset convention) and returns fused class
    probabilities ``(B, C)``. ``mode="global"`` needs no patches and ``mode="local"`` no global
    images. ``min_spread=None`` disables the confidence filter.
    """

    def __init__(
        self,
        global_model: nn.Module,
        local_model: nn.Module,
        *,
        fusion_weight: float = DEFAULT_FUSION_WEIGHT,
        patch_rule: PatchRule = "mean",
        min_spread: float | None = DEFAULT_MIN_SPREAD,
        mode: str = "hybrid",
    ) -> None:
        super().__init__()
        if mode not in HYBRID_MODES:
            raise ConfigError(f"model kwarg 'mode' must be one of {HYBRID_MODES}, got {mode!r}")
        if patch_rule not in PATCH_RULES:
            raise ConfigError(f"model kwarg 'patch_rule' must be one of {PATCH_RULES}, got {patch_rule!r}")
        if not 0.0 <= fusion_weight <= 1.0:
            raise ConfigError(f"model kwarg 'fusion_weight' must be in [0, 1], got {fusion_weight}")
        self.global_branch = global_model
        self.local_branch = local_model
        self.fusion_weight = fusion_weight
        self.patch_rule: PatchRule = patch_rule
        self.min_spread = min_spread
        self.mode = mode

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Kwargs of ``create_model("hybrid_googlenet_sep", ...)`` that rebuild this model."""
        branches = (self.global_branch, self.local_branch)
        if not all(isinstance(branch, GoogLeNetSEP) for branch in branches):
            raise TypeError("model_kwargs describes GoogLeNetSEP branches only (registry name 'hybrid_googlenet_sep')")
        return {
            "num_classes": self.global_branch.num_classes,
            "global_kwargs": self.global_branch.model_kwargs,
            "local_kwargs": self.local_branch.model_kwargs,
            "fusion_weight": self.fusion_weight,
            "patch_rule": self.patch_rule,
            "min_spread": self.min_spread,
            "mode": self.mode,
        }

    def global_proba(self, global_images: Tensor) -> Tensor:
        """Method 1: global-branch probabilities ``(B, C)``."""
        return _branch_proba(self.global_branch, global_images)

    def patch_proba(self, patches: Tensor) -> Tensor:
        """Local-branch probabilities of every patch, ``(B, P, C)``."""
        if patches.ndim != 5:
            raise ValueError(f"patches must be (batch, patches, 3, h, w), got shape {tuple(patches.shape)}")
        batch, count = patches.shape[:2]
        return _branch_proba(self.local_branch, patches.flatten(0, 1)).unflatten(0, (batch, count))

    def local_proba(self, patches: Tensor) -> Tensor:
        """Method 2: voted local-branch probabilities ``(B, C)``."""
        return patch_vote(self.patch_proba(patches), rule=self.patch_rule, min_spread=self.min_spread)

    def branch_outputs(self, global_images: Tensor, patches: Tensor) -> dict[str, Tensor]:
        """Both branches in one pass: ``{"global": (B, C), "patches": (B, P, C)}``.

        Feed them to :func:`histobreast.models.fusion.patch_vote` / :func:`fuse_branches` with any rule
        and weight to score methods 1, 2, 3, 2(Max) and 3(Max) together.
        """
        return {"global": self.global_proba(global_images), "patches": self.patch_proba(patches)}

    def forward(self, global_images: Tensor | Mapping[str, Tensor] | None, patches: Tensor | None = None) -> Tensor:
        if isinstance(global_images, Mapping):
            global_images, patches = global_images.get("global"), global_images.get("patches")
        if self.mode != "local" and global_images is None:
            raise ValueError(f"mode {self.mode!r} needs the global images")
        if self.mode != "global" and patches is None:
            raise ValueError(f"mode {self.mode!r} needs the patches")
        if self.mode == "global":
            return self.global_proba(global_images)  # type: ignore[arg-type]
        local = self.local_proba(patches)  # type: ignore[arg-type]
        if self.mode == "local":
            return local
        return fuse_branches(local, self.global_proba(global_images), self.fusion_weight)  # type: ignore[arg-type]

    def predict_proba(
        self, global_images: Tensor | Mapping[str, Tensor] | None, patches: Tensor | None = None
    ) -> Tensor:
        """Fused class probabilities ``(B, C)`` (the same as ``forward``)."""
        return self(global_images, patches)


@register_model("hybrid_googlenet_sep")
def hybrid_googlenet_sep(
    num_classes: int = 2,
    global_kwargs: Mapping[str, Any] | None = None,
    local_kwargs: Mapping[str, Any] | None = None,
    **hybrid_kwargs: Any,
) -> HybridCNN:
    """Two GoogLeNetSEP branches (each from its own kwargs, e.g. pruned widths) in a HybridCNN."""
    branches = []
    for key, kwargs in (("global_kwargs", global_kwargs), ("local_kwargs", local_kwargs)):
        kwargs = dict(kwargs or {})
        if kwargs.setdefault("num_classes", num_classes) != num_classes:
            raise ConfigError(
                f"model kwarg '{key}.num_classes' = {kwargs['num_classes']} differs from num_classes = {num_classes}"
            )
        branches.append(GoogLeNetSEP(**kwargs))
    return HybridCNN(branches[0], branches[1], **hybrid_kwargs)
