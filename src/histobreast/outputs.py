"""Where an output may go: never onto, into or around what the user gave us to read.

Every command that writes beside its inputs (``predict --out/--review``, ``krem --out``,
``prune --out``) calls :func:`refuse_output_over_inputs` before it writes anything, so an input
image, a source model folder or an input folder is never replaced or filled with our files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from histobreast.errors import ConfigError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_output_over_inputs(out: str | Path, inputs: Iterable[str | Path], option: str, *, folder: bool) -> None:
    """Raise :class:`ConfigError` when output ``out`` would replace or mix with an input.

    A file output (``folder=False``) may not be an input file. A folder output may not be an
    input, lie inside an input folder (the next run would read our figures as inputs), or hold an
    input (writing it could replace the input). Paths are compared after resolving symlinks.
    """
    target = Path(out).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target == source:
            raise ConfigError(f"{option} {out}: is the input {item}; choose another path (inputs are never replaced)")
        if folder and source.is_dir() and _inside(target, source):
            raise ConfigError(
                f"{option} {out}: lies inside the input folder {item}, whose images would then include our "
                "output; choose a folder outside it"
            )
        if folder and _inside(source, target):
            raise ConfigError(f"{option} {out}: holds the input {item}; choose a folder that does not")
