"""Issue 21 item 8 for any model kind: ``predict`` flags a 1x1 dot and a blank white field, not a
training image, in its CSV's ``outside_training`` column (shared by the pipeline tests, each of
which has just trained its own kind of model or ensemble)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from histobreast.cli import app
from histobreast.errors import DatasetError


def assert_predict_flags_degenerate_inputs(
    model: Path, training_image: Path, tmp_path: Path, *, small_is_refused: bool = False, far_scale: float | None = None
) -> None:
    """Run ``histobreast predict`` on ``model`` over a training image, a dot and a white field.

    ``small_is_refused``: the model cannot apply itself to the dot at all (the Spanhol baseline's
    patches do not fit in it), so predict must refuse it in one line naming it, then flag the rest.
    ``far_scale``: also predict the training image at this µm/px, which must be flagged.
    """
    inputs = tmp_path / "degenerate"
    inputs.mkdir()
    shutil.copy(training_image, inputs / f"normal{training_image.suffix}")
    width, height = Image.open(training_image).size
    Image.new("RGB", (1, 1), (200, 100, 150)).save(inputs / "dot.png")
    Image.new("RGB", (width, height), (255, 255, 255)).save(inputs / "white.png")
    out = tmp_path / "degenerate.csv"
    expected = {"dot": 1.0, "white": 1.0, "normal": 0.0}
    if small_is_refused:
        result = CliRunner().invoke(app, ["predict", str(model), str(inputs), "--out", str(out)])
        assert isinstance(result.exception, DatasetError) and "dot.png" in str(result.exception), result.exception
        assert not out.exists()
        (inputs / "dot.png").unlink()
        del expected["dot"]
    result = CliRunner().invoke(app, ["predict", str(model), str(inputs), "--out", str(out)])
    assert result.exit_code == 0, (result.output, repr(result.exception))
    flags = {row["image_id"]: float(row["outside_training"]) for row in csv.DictReader(out.open())}
    assert flags == expected, flags
    if far_scale is not None:
        normal = str(inputs / f"normal{training_image.suffix}")
        result = CliRunner().invoke(app, ["predict", str(model), normal, "--mpp", str(far_scale), "--out", str(out)])
        assert result.exit_code == 0, (result.output, repr(result.exception))
        assert [float(row["outside_training"]) for row in csv.DictReader(out.open())] == [1.0]
        assert "µm/px (training:" in result.output
