"""One network -> one ``.onnx`` file (dynamic batch axis), checked against PyTorch through onnxruntime.

The export uses torch's TorchScript-based ONNX exporter (``dynamo=False``: it traces the eval-mode
network in about a second, where the dynamo exporter takes tens of seconds on these graphs).
:func:`check_parity` runs seeded inputs through both and refuses, naming the network and the
largest difference, when they disagree by more than :data:`PARITY_TOLERANCE`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from histobreast.errors import HistobreastError
from histobreast.export.networks import Network, seeded_inputs
from histobreast.runtime.folder import INPUT_NAME, OUTPUT_NAME, open_session
from histobreast.seeding import derive_seed

#: Issue 17's bar: ONNX Runtime FP32 probabilities within 1e-4 (max abs) of PyTorch.
PARITY_TOLERANCE = 1e-4
#: ONNX opset: 17 holds every operator these networks use (LSTM, BatchNorm, adaptive pooling as GlobalAveragePool).
OPSET = 17
#: Seeded inputs per parity check, at two batch sizes so the dynamic batch axis is exercised too.
PARITY_BATCHES = (1, 3)


class ExportError(HistobreastError):
    """A network could not be exported, or its ONNX graph disagrees with PyTorch."""


def export_network(network: Network, path: Path) -> Path:
    """Write ``network`` as ONNX to ``path`` (input ``input``, output ``output``, dynamic axes named)."""
    sample = seeded_inputs(network, 2, seed=0)
    axes = {INPUT_NAME: dict(network.dynamic_axes), OUTPUT_NAME: {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                network.module,
                (sample,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as err:  # the exporter raises many types; the user needs the network and the reason
        raise ExportError(f"network {network.name!r}: ONNX export failed ({type(err).__name__}: {err})") from err
    return path


def max_difference(network: Network, path: Path, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and onnxruntime outputs on seeded inputs."""
    session = open_session(path, threads=1)
    worst = 0.0
    for k, batch in enumerate(PARITY_BATCHES):
        inputs = seeded_inputs(network, batch, seed=derive_seed(seed, k))
        with torch.no_grad():
            expected = network.module(inputs).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"network {network.name!r}: ONNX output shape {got.shape}, PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def check_parity(network: Network, path: Path, tolerance: float = PARITY_TOLERANCE) -> float:
    """The max difference of :func:`max_difference`; raises :class:`ExportError` above ``tolerance``."""
    worst = max_difference(network, path)
    if not worst <= tolerance:  # NaN fails too
        raise ExportError(
            f"network {network.name!r}: onnxruntime differs from PyTorch by {worst:.3g} (max abs) "
            f"> tolerance {tolerance:g}; nothing written"
        )
    return worst
