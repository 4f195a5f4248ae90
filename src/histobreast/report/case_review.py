"""Case review: predictions laid out for the pathologist who reads them.

Every image gets a card (thumbnail + class probabilities) and a row in a table, least certain
first, and is flagged for review when the model is unsure of it: its probability for the called
class is below ``min_confidence``, or too few of the model's other readings of the same image
agree (System A's global and local branches and max-rule variants; an ensemble's members; System
B's six views, whose key windows are outlined on the card).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from histobreast.data.imageio import read_rgb
from histobreast.errors import ConfigError
from histobreast.predictions import Predictions
from histobreast.report.plots import plot_case
from histobreast.report.render import Report, RunInfo
from histobreast.report.tables import Column, Table

# Defaults of the review flag: a call below 0.6, or fewer than two thirds of the other readings
# agreeing (4 of 6 views; 3 of System A's 4 other methods), is worth a second look.
MIN_CONFIDENCE = 0.6
MIN_AGREEMENT = 2 / 3
THUMBNAIL_PX = 360  # longest side of the thumbnails on the cards
# The call's colour on the cards (its bar, and the windows of the views that agree) and a dissenting view's (RGB).
AGREE_COLOUR = (70, 150, 255)
DISSENT_COLOUR = (230, 30, 30)


@dataclass(frozen=True)
class Case:
    """One image's call and how far to trust it."""

    image_id: str
    path: str
    predicted: str
    confidence: float  # the headline method's probability for the called class
    runner_up: str  # the class with the next-highest probability ("" when all the others have 0)
    runner_up_probability: float
    agreement: float | None  # share of the other readings that call the same class (None: there are none)
    agreement_note: str  # e.g. "5 of 6 views; rot90 says Benign"
    flagged: bool
    windows: tuple[tuple[tuple[int, int, int, int], bool], ...] = ()  # ((x, y, w, h), agrees) of views that tell


@dataclass(frozen=True)
class Reading:
    """Another reading of an image: another method's, or one view's (System B's voters)."""

    who: str  # the method, or the view (with its region rank when a view has several)
    called: int  # class index
    whole_image: bool
    box: tuple[int, int, int, int] | None = None  # (x, y, w, h) in the image's pixels: where a view looked


def second_opinions(results: Mapping[str, Predictions], headline: str) -> dict[str, list[Reading]]:
    """Per image of ``results[headline]``: every other reading of it.

    Another method with the same image ids reads whole images (named by the method); one whose
    ids are ``<image_id>/<view>[/<rank>]`` reads views of them (named by the view), with its window
    when the table has ``region_x/y/w/h`` columns (:func:`~histobreast.votes.view_predictions`).
    """
    images = set(results[headline].image_ids)
    opinions: dict[str, list[Reading]] = defaultdict(list)
    for name, pred in results.items():
        if name == headline or pred.classes != results[headline].classes:
            continue
        corners = [pred.extra.get(f"region_{c}") for c in "xywh"]
        for i, (image_id, called) in enumerate(zip(pred.image_ids, pred.predicted.tolist())):
            if image_id in images:
                opinions[image_id].append(Reading(name, called, True))
                continue
            base, part = image_id, ""
            while "/" in base and base not in images:  # "<image_id>/<view>" or "<image_id>/<view>/<rank>"
                base, _, tail = base.rpartition("/")
                part = f"{tail}/{part}" if part else tail
            if base in images:
                box = tuple(int(c[i]) for c in corners) if all(c is not None for c in corners) else None
                opinions[base].append(Reading(part, called, False, box))  # type: ignore[arg-type]
    return opinions


def review_cases(
    results: Mapping[str, Predictions],
    headline: str,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_agreement: float = MIN_AGREEMENT,
    readings: str = "other methods",
) -> list[Case]:
    """One :class:`Case` per image of ``results[headline]``, least confident first (ties by id).

    ``readings`` names the other whole-image readings in the notes ("members" for an ensemble).
    """
    for name, value in (("min_confidence", min_confidence), ("min_agreement", min_agreement)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"case review: {name} must be between 0 and 1, got {value}")
    pred = results[headline]
    opinions = second_opinions(results, headline)
    outside = pred.extra.get("outside_training")  # set by predict: input outside the model's training range
    cases = []
    for i, image_id in enumerate(pred.image_ids):
        order = np.argsort(-pred.probs[i], kind="stable")
        called, second = int(order[0]), int(order[min(1, len(order) - 1)])
        others = opinions.get(image_id, [])
        dissent = [(other.who, pred.classes[other.called]) for other in others if other.called != called]
        agreement = (len(others) - len(dissent)) / len(others) if others else None
        note = ""
        if others:
            kind = (
                readings
                if all(other.whole_image for other in others)
                else "views"
                if not any(other.whole_image for other in others)
                else "other readings"
            )
            note = f"{len(others) - len(dissent)} of {len(others)} {kind} agree"
            note += "".join(f"; {who} says {label}" for who, label in dissent)
        confidence = float(pred.probs[i, called])
        unlike = bool(outside[i]) if outside is not None else False
        if unlike:  # the call means little on an image unlike those the model learnt from
            note = f"{note}; " * bool(note) + "unlike the training images"
        cases.append(
            Case(
                image_id=image_id,
                path=pred.paths[i],
                predicted=pred.classes[called],
                confidence=confidence,
                runner_up=pred.classes[second]
                if pred.probs[i, second] > 0
                else "",  # no class is next to a unanimous vote
                runner_up_probability=float(pred.probs[i, second]),
                agreement=agreement,
                agreement_note=note,
                flagged=unlike or confidence < min_confidence or (agreement is not None and agreement < min_agreement),
                windows=tuple((other.box, other.called == called) for other in others if other.box is not None),
            )
        )
    return sorted(cases, key=lambda case: (case.confidence, case.image_id))


def thumbnail(
    path: str | Path,
    longest_side: int = THUMBNAIL_PX,
    boxes: Sequence[tuple[tuple[int, int, int, int], tuple[int, int, int]]] = (),
) -> np.ndarray:
    """The image at ``path`` shrunk (never enlarged) so its longest side is ``longest_side``, with
    ``boxes`` (``((x, y, w, h) in the image's pixels, RGB colour)``) drawn on it."""
    image = Image.fromarray(read_rgb(path))
    width = image.width
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    out = np.array(image)
    scale = out.shape[1] / width
    for (x, y, w, h), colour in boxes:
        corner = (round(x * scale), round(y * scale))
        cv2.rectangle(out, corner, (round((x + w) * scale) - 1, round((y + h) * scale) - 1), colour, 2)
    return out


def beside(left: np.ndarray, right: np.ndarray, gap: int = 6) -> np.ndarray:
    """``right`` (any size) resized to ``left``'s height and set beside it, a white ``gap`` between."""
    height = left.shape[0]
    width = max(1, round(right.shape[1] * height / right.shape[0]))
    resized = cv2.resize(right, (width, height), interpolation=cv2.INTER_AREA)
    return np.hstack([left, np.full((height, gap, 3), 255, np.uint8), resized])


def write_case_review(
    results: Mapping[str, Predictions],
    headline: str,
    out_dir: str | Path,
    run: RunInfo,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_agreement: float = MIN_AGREEMENT,
    readings: str = "other methods",
    thumbnail_px: int = THUMBNAIL_PX,
    overlays: Mapping[str, tuple[np.ndarray, str]] | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/report.md|html`` (+ ``metrics.json`` with every case and ``figures/``).

    ``overlays[image_id] = (picture, caption)`` puts a picture (an explanation map blended on the
    image, :func:`histobreast.explain.api.card_overlays`) beside that image's thumbnail on its card.
    """
    pred = results[headline]
    cases = review_cases(
        results, headline, min_confidence=min_confidence, min_agreement=min_agreement, readings=readings
    )
    flagged = sum(case.flagged for case in cases)
    counts = ", ".join(f"{c} {sum(case.predicted == c for case in cases)}" for c in pred.classes)
    report = Report(
        out_dir,
        f"Case review: {len(cases)} images",
        run,
        intro=(
            f"Calls by {headline}: {counts}. {flagged} of {len(cases)} images are flagged for review: the "
            f"probability of the called class is below {min_confidence:g}, fewer than {min_agreement:.0%} of the "
            "model's other readings of the image agree, or the image is unlike the training images. Least certain first. A model's probability is not a "
            "diagnosis; it says how sure this model is, on images like those it was trained on."
        ),
    )
    columns = [
        Column("review", "Review"),
        Column("image_id", "Image"),
        Column("predicted", "Call"),
        Column("confidence", "p(call)", fmt=".2f"),
        Column("runner_up", "Next class"),
        Column("runner_up_probability", "p(next)", fmt=".2f"),
        Column("agreement_note", "Other readings"),
    ]
    rows = [{**asdict(case), "review": "yes" if case.flagged else ""} for case in cases]
    report.add_table(Table("Cases, least certain first", columns, rows))
    report.add_heading("Cards")
    for stale in (Path(out_dir) / "figures").glob("case[0-9][0-9][0-9][0-9]_*.png"):
        stale.unlink()  # an earlier review's cards in this folder would pass for this one's
    probs = {image_id: pred.probs[i] for i, image_id in enumerate(pred.image_ids)}
    for n, case in enumerate(cases, 1):
        name = f"case{n:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', case.image_id)}.png"
        title = f"{case.image_id}: {case.predicted} ({case.confidence:.2f}){'  - review' if case.flagged else ''}"
        boxes = [(box, AGREE_COLOUR if agrees else DISSENT_COLOUR) for box, agrees in case.windows]
        picture, caption = thumbnail(case.path, thumbnail_px, boxes), ""
        if overlays and case.image_id in overlays:
            overlay, caption = overlays[case.image_id]
            picture = beside(picture, overlay)
        card = plot_case(
            picture,
            pred.classes,
            probs[case.image_id],
            report.figure_path(name),
            title=title,
            note=case.agreement_note,
            highlight=AGREE_COLOUR,
        )
        where = " Boxes: where each view looked (blue agrees with the call, red does not)." if boxes else ""
        where += f" {caption[:1].upper()}{caption[1:]}." if caption else ""
        report.add_figure(card, f"{title}. {case.agreement_note}".strip(". ") + "." + where)
    report.add_metrics("cases", rows)
    return report.write()


#: The file that describes a model folder, an ensemble folder or an exported (ONNX) folder.
DESCRIPTION_FILES = ("model.json", "ensemble.json", "export.json")


def model_description(model: str | Path) -> Path:
    """The description file of ``model`` (model.json, ensemble.json or export.json): the review's config line."""
    found = [Path(model) / name for name in DESCRIPTION_FILES if (Path(model) / name).is_file()]
    return found[0] if found else Path(model) / DESCRIPTION_FILES[0]


def review_run_info(model: str | Path, inputs: Sequence[str | Path], method: str) -> RunInfo:
    """The report header of a review of ``inputs`` by the model folder ``model``."""
    return RunInfo(
        dataset=", ".join(map(str, inputs)),
        split="unlabelled images",
        model=f"{model} ({method})",
        config=f"{model_description(model)} (the model's training config)",
    )
