"""Case review: ordering, the review flag, the other readings' agreement, and the written report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histobreast.errors import ConfigError
from histobreast.predictions import Predictions
from histobreast.report import RunInfo
from histobreast.report.case_review import (
    AGREE_COLOUR,
    DISSENT_COLOUR,
    Reading,
    review_cases,
    second_opinions,
    thumbnail,
    write_case_review,
)

CLASSES = ["Benign", "Invasive"]
VIEWS = ["raw", "rot90", "rot180", "rot270", "flip_h", "flip_v"]


def _pred(ids: list[str], p_invasive: list[float], paths: list[str] | None = None) -> Predictions:
    probs = np.stack([1 - np.array(p_invasive), np.array(p_invasive)], axis=1)
    return Predictions(CLASSES, ids, probs, np.full(len(ids), -1), list(ids), paths=paths or [])


def test_cases_are_ordered_least_certain_first_and_flagged_by_confidence_or_dissent() -> None:
    results = {
        "hybrid": _pred(["a", "b", "c"], [0.95, 0.55, 0.80]),
        "global": _pred(["a", "b", "c"], [0.90, 0.60, 0.30]),
        "local": _pred(["a", "b", "c"], [0.80, 0.40, 0.20]),
    }
    cases = review_cases(results, "hybrid")
    assert [c.image_id for c in cases] == ["b", "c", "a"]
    b, c, a = cases
    assert (b.predicted, round(b.confidence, 2), b.runner_up, round(b.runner_up_probability, 2)) == (
        "Invasive",
        0.55,
        "Benign",
        0.45,
    )
    assert b.flagged and b.agreement == 0.5  # unsure (0.55 < 0.6), and local disagrees
    assert (
        c.flagged
        and c.agreement == 0.0
        and c.agreement_note == "0 of 2 other methods agree; global says Benign; local says Benign"
    )  # sure, but both branches dissent
    assert not a.flagged and a.agreement == 1.0 and a.agreement_note == "2 of 2 other methods agree"
    assert not review_cases(results, "hybrid", min_agreement=0.0, min_confidence=0.5)[0].flagged
    with pytest.raises(ConfigError, match="min_confidence must be between 0 and 1, got 60"):
        review_cases(results, "hybrid", min_confidence=60)


def test_views_are_counted_as_their_image_s_readings() -> None:
    votes = [0.9, 0.8, 0.7, 0.2, 0.9, 0.3]  # 4 of 6 views call Invasive
    results = {"image": _pred(["x"], [4 / 6]), "patch": _pred([f"x/{v}" for v in VIEWS], votes)}
    (case,) = review_cases(results, "image")
    assert case.agreement == 4 / 6 and not case.flagged
    assert case.agreement_note == "4 of 6 views agree; rot270 says Benign; flip_v says Benign"
    (alone,) = review_cases({"image": results["image"]}, "image")
    assert alone.agreement is None and alone.agreement_note == ""
    several = _pred([f"x/{v}/{r}" for v in VIEWS for r in (0, 1)], [p for p in votes for _ in (0, 1)])
    (case,) = review_cases({"image": results["image"], "patch": several}, "image")  # two regions per view
    assert (
        case.agreement_note == "8 of 12 views agree; rot270/0 says Benign; rot270/1 says Benign; "
        "flip_v/0 says Benign; flip_v/1 says Benign"
    )
    (unanimous,) = review_cases({"image": _pred(["y"], [1.0])}, "image")
    assert unanimous.runner_up == "" and unanimous.confidence == 1.0


def test_the_review_is_written_with_a_card_per_image(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([(640, 480), (200, 100)]):
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(np.full((size[1], size[0], 3), 60 * i + 40, np.uint8)).save(paths[-1])
    results = {"hybrid": _pred(["im0", "im 1/odd"], [0.9, 0.45], paths)}
    written = write_case_review(results, "hybrid", tmp_path / "review", RunInfo("two images", "-", "m", "c"))
    html = written["html"].read_text()
    assert "Case review: 2 images" in html and "1 of 2 images are flagged" in html
    cards = sorted(p.name for p in (tmp_path / "review" / "figures").glob("*.png"))
    assert cards == ["case0001_im_1_odd.png", "case0002_im0.png"]  # the unsure one (0.55) first
    assert all(f'src="figures/{name}"' in html for name in cards)
    cases = json.loads(written["metrics"].read_text())["results"]["cases"]
    assert [(c["image_id"], c["predicted"], c["review"]) for c in cases] == [
        ("im 1/odd", "Benign", "yes"),
        ("im0", "Invasive", ""),
    ]
    # a review of fewer images into the same folder leaves no card of the earlier one behind
    write_case_review(
        {"hybrid": results["hybrid"].subset([True, False])},
        "hybrid",
        tmp_path / "review",
        RunInfo("one image", "-", "m", "c"),
    )
    assert [p.name for p in (tmp_path / "review" / "figures").glob("*.png")] == ["case0001_im0.png"]
    assert thumbnail(paths[0], 64).shape == (48, 64, 3) and thumbnail(paths[1], 640).shape == (100, 200, 3)
    boxed = thumbnail(paths[0], 320, [((100, 40, 200, 160), AGREE_COLOUR)])  # drawn at half size
    assert tuple(boxed[20, 100]) == AGREE_COLOUR and tuple(boxed[99, 149]) == AGREE_COLOUR
    assert tuple(boxed[25, 110]) == (40, 40, 40)  # inside the box: the image


def test_view_windows_are_drawn_on_the_card_coloured_by_agreement(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(np.full((300, 400, 3), 200, np.uint8)).save(path)
    patch = _pred([f"x/{v}" for v in VIEWS], [0.9, 0.8, 0.7, 0.2, 0.9, 0.3], [str(path)] * 6)
    patch.extra = {
        "region_x": np.full(6, 40.0),
        "region_y": np.full(6, 20.0),
        "region_w": np.full(6, 100.0),
        "region_h": np.full(6, 100.0),
    }
    patch.extra["region_x"][3] = 240  # rot270 (which says Benign) looked elsewhere
    results = {"image": _pred(["x"], [4 / 6], [str(path)]), "patch": patch}
    ((reading, *_),) = second_opinions(results, "image").values()
    assert reading == Reading("raw", 1, False, (40, 20, 100, 100))
    written = write_case_review(results, "image", tmp_path / "review", RunInfo("x", "-", "m", "c"), thumbnail_px=400)
    assert "blue agrees with the call" in written["markdown"].read_text()
    card = np.asarray(Image.open(next((tmp_path / "review" / "figures").glob("case*.png"))).convert("RGB"))
    near = {
        name: (np.abs(card.astype(int) - colour).sum(axis=2) < 40).sum()
        for name, colour in (("agree", AGREE_COLOUR), ("dissent", DISSENT_COLOUR))
    }
    assert near["dissent"] > 50 and near["agree"] > near["dissent"]  # rot270's box; the others' and the call's bar
