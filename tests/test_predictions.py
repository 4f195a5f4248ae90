"""The Predictions table's plumbing: rows from records, pooling tables (extra columns kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histobreast.data.records import ImageRecord
from histobreast.errors import DatasetError
from histobreast.predictions import Predictions, concat_predictions, predictions_from_records


def test_predictions_from_records(tmp_path: Path) -> None:
    records = [
        ImageRecord(
            path=Path("a/SOB_B_A-14-22549AB-40-001.png"),
            label="benign",
            patient_id="p1",
            microns_per_pixel=0.49,
            source="breakhis",
            magnification=40,
        ),
        ImageRecord(path=Path("b/n001.tif"), label="Normal", patient_id="g1", microns_per_pixel=0.42, source="bach"),
        ImageRecord(path=Path("c/x.png"), label="weird", patient_id="q", microns_per_pixel=1.0, source="folder"),
    ]
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    pred = predictions_from_records(records, probs, ["benign", "malignant"], label_map={"Normal": "benign"})
    assert pred.labels.tolist() == [0, 0, -1]  # Normal -> benign via the map; unknown label -> -1
    assert pred.image_ids == ["SOB_B_A-14-22549AB-40-001", "n001", "x"]
    assert pred.patient_ids == ["p1", "g1", "q"] and pred.magnifications == [40, None, None]
    assert pred.predicted.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="3 records but 2 probability rows"):
        predictions_from_records(records, probs[:2], ["benign", "malignant"])


def _table(ids: list[str], **extra: list[float]) -> Predictions:
    probs = np.tile([[0.8, 0.2]], (len(ids), 1))
    return Predictions(
        classes=["benign", "malignant"],
        image_ids=ids,
        probs=probs,
        labels=np.zeros(len(ids), dtype=np.int64),
        patient_ids=[f"p{i}" for i in ids],
        magnifications=[40] * len(ids),
        paths=[f"{i}.png" for i in ids],
        extra={k: np.asarray(v) for k, v in extra.items()},
    )


def test_concat_keeps_the_extra_columns_every_part_has(tmp_path: Path) -> None:
    first = _table(["a", "b"], uncertainty=[0.1, 0.2], region_x=[3.0, 4.0])
    second = _table(["c"], uncertainty=[0.5])
    pooled = concat_predictions([first, second])
    assert pooled.image_ids == ["a", "b", "c"] and pooled.patient_ids == ["pa", "pb", "pc"]
    assert list(pooled.extra) == ["uncertainty"]  # region_x: the second part has no values for it
    np.testing.assert_array_equal(pooled.extra["uncertainty"], [0.1, 0.2, 0.5])
    # As subset does: a pooled table written and read back still has its column.
    again = Predictions.from_csv(pooled.to_csv(tmp_path / "pooled.csv"))
    np.testing.assert_allclose(again.extra["uncertainty"], [0.1, 0.2, 0.5])
    np.testing.assert_array_equal(concat_predictions([first]).extra["region_x"], [3.0, 4.0])


def test_concat_refuses_different_classes() -> None:
    other = _table(["c"])
    other.classes = ["benign", "tumour"]
    with pytest.raises(DatasetError, match="cannot pool"):
        concat_predictions([_table(["a"]), other])
