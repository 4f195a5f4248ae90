"""``slide inspect``: what a slide file is and every problem with it, as a small table per slide."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2

from histobreast.atomic import atomic_write_bytes
from histobreast.slides.reader import Slide, SlideError
from histobreast.slides.tissue import detect_tissue, stain_problem


@dataclass
class SlideReport:
    """Facts about one slide and its problems; ``refused`` when it cannot be used as it is."""

    path: Path
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    refused: bool = False

    def text(self) -> str:
        """The table, then one line per problem."""
        width = max((len(k) for k, _ in self.facts), default=0)
        lines = [str(self.path)] + [f"  {k:<{width}}  {v}" for k, v in self.facts]
        return "\n".join(lines + [f"  problem: {p}" for p in self.problems])


def _check_levels(slide: Slide) -> list[str]:
    """Read a small patch at the centre of every level; a corrupt tile becomes a problem line."""
    problems = []
    width, height = slide.dimensions
    for level, factor in enumerate(slide.level_downsamples):
        try:
            slide.read_region((int(width / 2), int(height / 2)), level, (64, 64))
        except SlideError as err:
            problems.append(f"level {level} unreadable ({err.reason})")
        del factor
    return problems


def inspect_slide(path: str | Path, mpp: float | None = None, masks_dir: str | Path | None = None) -> SlideReport:
    """Open ``path`` (without requiring a scale), list its facts, check levels, tissue and stain."""
    report = SlideReport(Path(path))
    try:
        slide = Slide(path, mpp)
    except SlideError as err:
        report.problems.append(f"refused: {err.reason}")
        report.refused = True
        return report
    with slide:
        dims = ", ".join(f"{w}x{h}" for w, h in slide.level_dimensions)
        report.facts += [
            ("format", f"{slide.format} (read by {slide.backend})"),
            ("levels", f"{slide.level_count}: {dims}"),
            ("µm/px", f"{slide.mpp:.4g} ({slide.mpp_source})" if slide.mpp else "none"),
            ("objective", f"{slide.objective:g}x" if slide.objective else "none"),
            ("associated", ", ".join(slide.associated_images) or "none"),
        ]
        if slide.mpp is None:
            report.problems.append("no µm/px in the file: predict and sample refuse it without --mpp")
        report.problems += _check_levels(slide)
        try:
            thumbnail, downsample = slide.thumbnail()
        except SlideError as err:
            report.problems.append(f"refused: {err.reason}")
            report.refused = True
            return report
        mask = detect_tissue(thumbnail, downsample, slide.mpp)
        report.facts.append(("tissue", f"{mask.fraction:.1%} of the slide"))
        problem = stain_problem(thumbnail)
        if problem:
            report.problems.append(f"not brightfield H&E: {problem}")
        if mask.fraction == 0:
            report.problems.append("no tissue found")
        if masks_dir is not None:
            ok, png = cv2.imencode(".png", mask.image())
            target = Path(masks_dir) / f"{report.path.stem}.tissue.png"
            atomic_write_bytes(target, png.tobytes())
            report.facts.append(("mask", str(target)))
    report.refused = report.refused or any(p.startswith("level") for p in report.problems)
    return report
