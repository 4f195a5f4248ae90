"""A command group whose default command is ``run``: ``histobreast prune X`` is ``histobreast prune run X``."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


class RunByDefault(TyperGroup):
    """A command group whose first argument, when it names no sub-command, is the ``run`` command's."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)
