"""Class activation maps of one network, computed by the maintained ``grad-cam`` library.

The network names the layers its maps read (``network.cam_target_layers()``, a method of every
model class in :mod:`histobreast.models`), so no user ever picks a layer. The library computes one
map per target layer, clipped at 0, scaled to [0, 1] per map and resized to the input's last two
dimensions; :func:`layer_maps` keeps them apart (System B's encoders are one layer per scale),
:func:`network_maps` averages them as the library does (GoogLeNet-SEP's four head sources).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from histobreast.errors import ConfigError, HistobreastError

#: ``--method`` names -> the library's CAM classes (methods that perturb the input, e.g. Score-CAM,
#: are left out: they assume a 4-D image batch, which System B's crop stacks are not).
METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
}
DEFAULT_METHOD = "gradcam"


class ExplainError(HistobreastError):
    """A model or an image that cannot be explained (the message says which and why)."""


def check_method(method: str) -> str:
    """``method`` when it is a known map method; otherwise a one-line ConfigError listing them."""
    if method not in METHODS:
        raise ConfigError(f"--method: unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def target_layers(network: nn.Module, what: str = "") -> list[nn.Module]:
    """The layers ``network`` says its maps read; ExplainError for a network that names none."""
    method = getattr(network, "cam_target_layers", None)
    if method is None:
        raise ExplainError(
            f"{what or type(network).__name__}: model kind {type(network).__name__} has no class activation map "
            "(its network names no target layer)"
        )
    return list(method())


def _per_layer(cam_class: type[BaseCAM]) -> type[BaseCAM]:
    """``cam_class`` returning ``(B, L, H, W)``: one map per target layer, sized to the input's last two axes.

    The library's own extension points: its multi-layer mean is skipped (the caller combines), and
    the target size is read from the last two axes, so System B's ``(B, S, 3, H, W)`` stacks work.
    """

    class PerLayer(cam_class):  # type: ignore[misc, valid-type]
        def get_target_width_height(self, input_tensor: Tensor) -> tuple[int, int]:
            return input_tensor.size(-1), input_tensor.size(-2)

        def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(cam_per_target_layer, axis=1)

    PerLayer.__name__ = f"PerLayer{cam_class.__name__}"
    return PerLayer


def layer_maps(network: nn.Module, inputs: Tensor, classes: Sequence[int], method: str = DEFAULT_METHOD) -> np.ndarray:
    """Maps ``(B, L, H, W)`` in [0, 1] of class ``classes[b]`` for each input ``b``, one per target layer.

    ``inputs`` are what the network's ``forward`` takes (``(B, 3, H, W)``, or System B's stacks);
    ``H, W`` are their last two sizes. A map whose target layer is 1x1 for these inputs locates
    nothing: ExplainError says the inputs are too small for the network.
    """
    cam_class = METHODS[check_method(method)]
    layers = target_layers(network)
    if len(classes) != len(inputs):
        raise ValueError(f"one class per input needed: {len(classes)} classes for {len(inputs)} inputs")
    was_training = network.training
    sizes: list[tuple[int, int]] = []
    probes = [layer.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:]))) for layer in layers]
    cam = _per_layer(cam_class)(network, layers)
    try:
        # cuDNN's RNN backward (System B's BiLSTM) refuses eval mode; the CPU path has no such limit.
        with torch.backends.cudnn.flags(enabled=False):
            maps = cam(inputs, [ClassifierOutputTarget(int(c)) for c in classes])
    finally:  # not the library's context manager: its __exit__ swallows IndexError
        cam.activations_and_grads.release()
        for probe in probes:
            probe.remove()
        network.train(was_training)
    if sizes and min(min(s) for s in sizes) < 2:
        raise ExplainError(
            f"inputs of {inputs.shape[-1]}x{inputs.shape[-2]} px leave {type(network).__name__}'s target layer "
            f"{sizes[0][1]}x{sizes[0][0]}: too small for a map that locates anything"
        )
    return maps.astype(np.float32)


def network_maps(
    network: nn.Module, inputs: Tensor, classes: Sequence[int], method: str = DEFAULT_METHOD
) -> np.ndarray:
    """Maps ``(B, H, W)`` in [0, 1]: the target layers' maps averaged and rescaled (the library's rule)."""
    mean = layer_maps(network, inputs, classes, method).mean(axis=1)
    return rescale(mean)


def rescale(maps: np.ndarray) -> np.ndarray:
    """Each map (the last two axes) divided by its maximum, so 1 is its strongest evidence; all-zero maps stay 0."""
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)
