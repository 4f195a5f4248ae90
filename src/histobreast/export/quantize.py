"""``histobreast quantize``: an exported folder -> static INT8 (QDQ) graphs, calibrated on training images.

onnxruntime's quantisation tools do the work (:func:`onnxruntime.quantization.quantize_static`):
QDQ format, per-channel INT8 weights, UINT8 activations (onnxruntime's x86 default, U8S8), ranges
by MinMax calibration. The calibration inputs go through the model's own pre-processing
(:mod:`histobreast.runtime.inputs`: stain target, resize, System A's grid, System B's six views x
KREM crops, Spanhol 2016's sliding windows), network by network; System B's FDNet is calibrated on
the features of its FP32 encoders.
Calibration images outside the model's training range (another scale, size or no tissue) are
refused. The new folder's export.json records how it was made (``quantization``).
"""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histobreast.atomic import atomic_folder, atomic_write_json
from histobreast.data.imageio import collect_images
from histobreast.data.records import UNLABELLED, ImageRecord
from histobreast.errors import ConfigError
from histobreast.export.folder import check_new_folder, member_folder, network_entry
from histobreast.pipelines.input_range import flag_unlike_training, prediction_scale
from histobreast.preprocess.model_arrays import model_array
from histobreast.runtime.folder import EXPORT_JSON, INPUT_NAME, ExportedModel, open_session, read_exported
from histobreast.runtime.inputs import (
    hybrid_batches,
    image_batches,
    image_key_regions,
    key_region_params,
    model_stain,
    spanhol_patches,
)
from histobreast.runtime.predict import system_b_features

#: Calibration images used at most (evenly spread over those given): MinMax ranges settle within tens.
DEFAULT_MAX_IMAGES = 64
#: Images per calibration batch.
CALIBRATION_BATCH = 4


def key_region_crops(model: ExportedModel, records: Sequence[ImageRecord]) -> list[np.ndarray]:
    """System B's uint8 crop stacks of each calibration image in the trained views (KREM runs once
    for all four networks)."""
    params, stain, views = key_region_params(model), model_stain(model), model.inputs["views"]
    return [image_key_regions(model, record, views, params, stain)[1] for record in records]


def calibration_arrays(
    model: ExportedModel, records: Sequence[ImageRecord], network: str, crops: Sequence[np.ndarray] = ()
) -> Iterator[np.ndarray]:
    """The inputs network ``network`` of ``model`` sees for ``records``, by batch (System B: from
    their :func:`key_region_crops` ``crops``, one image per batch)."""
    kind, role = model.input_kind, model.networks[network].role
    if kind == "hybrid":
        for global_images, patches in hybrid_batches(model, records, None, CALIBRATION_BATCH):
            yield global_images if role == "global" else patches.reshape(-1, *patches.shape[2:])
    elif kind == "image":
        yield from image_batches(model, records, None, CALIBRATION_BATCH)
    elif kind == "spanhol_patches":
        stain = model_stain(model)
        for record in records:
            yield from spanhol_patches(model, record, stain)
    elif role == "encoder":
        index = [n.name for n in model.by_role("encoder")].index(network)
        yield from (model_array(stack[:, index]) for stack in crops)
    else:  # FDNet: the features of the FP32 encoders
        encoders = [open_session(n.path) for n in model.by_role("encoder")]
        yield from (system_b_features(encoders, stack) for stack in crops)


def calibration_records(model: ExportedModel, images: Sequence[Path], max_images: int) -> list[ImageRecord]:
    """The calibration images as records at the model's training scale; images unlike the training
    ones are refused, naming the first."""
    scale, _ = prediction_scale(model.info, None, model.path, physical_pipeline=bool(model.inputs["physical_scale"]))
    chosen = np.unique(np.linspace(0, len(images) - 1, min(max_images, len(images))).astype(int))
    records = [
        ImageRecord(
            path=images[i], label=UNLABELLED, patient_id=images[i].stem, microns_per_pixel=scale, source="calibration"
        )
        for i in chosen
    ]
    unlike = flag_unlike_training(records, model.info)
    for record in records:
        if record.image_id in unlike:
            raise ConfigError(
                f"--calibration {record.path}: unlike the model's training images ({'; '.join(unlike[record.image_id])}); "
                "calibrate on training images"
            )
    return records


class ArrayReader:
    """onnxruntime's CalibrationDataReader protocol over batches of one network's inputs."""

    def __init__(self, arrays: Iterator[np.ndarray]) -> None:
        self.arrays = arrays

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self.arrays, None)
        return None if array is None else {INPUT_NAME: np.ascontiguousarray(array, dtype=np.float32)}


def quantize_network(source: Path, target: Path, arrays: Iterator[np.ndarray]) -> Path:
    """Static INT8 QDQ of one ONNX graph (per-channel INT8 weights, UINT8 activations, MinMax ranges
    over ``arrays``): writes ``target``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(f".{target.name}.prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared))  # shape inference + graph folding, as ORT advises
        quantize_static(
            str(prepared),
            str(target),
            ArrayReader(arrays),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return target


def quantize_model_into(
    model: ExportedModel, images: Sequence[Path], folder: Path, max_images: int, keep_fp32: Sequence[str] = ()
) -> dict[str, Any]:
    """Quantise the networks of ``model`` into the existing empty ``folder`` (those named in
    ``keep_fp32`` are copied as they are); returns its export.json."""
    import onnxruntime

    unknown = sorted(set(keep_fp32) - set(model.networks))
    if unknown:
        raise ConfigError(f"--fp32: {unknown} are not networks of {model.path} (it has {list(model.networks)})")
    records = calibration_records(model, images, max_images)
    crops = key_region_crops(model, records) if model.input_kind == "key_regions" else []
    entries = []
    for name, network in model.networks.items():
        if name in keep_fp32:
            target = Path(shutil.copy2(network.path, folder / network.path.name))
        else:
            target = quantize_network(
                network.path, folder / f"{name}.int8.onnx", calibration_arrays(model, records, name, crops)
            )
        precision = "fp32" if name in keep_fp32 else "int8"
        entries.append(network_entry(name, target, network.role, network.produces, network.sample_shape, precision))
    description = {
        **model.description,
        "networks": entries,
        "quantization": {
            "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {onnxruntime.__version__})",
            "format": "QDQ",
            "weights": "int8, per channel",
            "activations": "uint8",
            "calibration_method": "MinMax",
            "calibration_images": [str(r.path) for r in records],
            "calibration_count": len(records),
            "kept_fp32": list(keep_fp32),
            "from": str(model.path.resolve()),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    atomic_write_json(folder / EXPORT_JSON, description)
    return description


def quantize_exported(
    exported: str | Path,
    calibration: Sequence[str | Path],
    out: str | Path,
    max_images: int = DEFAULT_MAX_IMAGES,
    keep_fp32: Sequence[str] = (),
) -> Path:
    """Write the INT8 version of exported folder ``exported`` (model or ensemble) to the new folder
    ``out``; networks named in ``keep_fp32`` (e.g. System A's ``global``) stay FP32."""
    exported, out = Path(exported), Path(out)
    check_new_folder(out, [exported, *map(Path, calibration)])
    source = read_exported(exported)
    if source.description.get("quantization"):
        raise ConfigError(f"{exported}: is already quantised; quantize the FP32 export")
    images = collect_images([Path(c) for c in calibration])
    with atomic_folder(out) as tmp:
        if isinstance(source, ExportedModel):
            quantize_model_into(source, images, tmp, max_images, keep_fp32)
        else:
            for name, member in source.members.items():
                (tmp / member_folder(name)).mkdir()
                quantize_model_into(member, images, tmp / member_folder(name), max_images, keep_fp32)
            atomic_write_json(tmp / EXPORT_JSON, {**source.description, "quantization": {"members": "int8"}})
        read_exported(tmp)
    return out
