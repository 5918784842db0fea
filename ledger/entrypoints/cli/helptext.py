"""How every ``--help`` screen reads: the one place the help formatter is adjusted.

Typer builds each command and group from a class; :func:`use_for` makes every command and
group of the app use the two below, which

- reflow the docstrings: a paragraph's line breaks (kept short for the source) become
  spaces, so a sentence is wrapped by the terminal's width, never in the middle of a
  line (typer's rich help keeps them);
- show no type for flags (typer shows ``--json <bool>``, as if it took a value) and name
  arguments in capitals, as usage lines do (``history SLOT``, not ``{slot}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["Command", "Group", "use_for"]


def reflowed(text: str | None) -> str | None:
    """``text`` with each paragraph on one line (paragraphs stay apart)."""
    if text is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


def _tidied(params: Iterable[Any]) -> None:
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper()
        elif isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""


class Command(TyperCommand):
    def __init__(self, name: str | None, *, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, help=reflowed(help), **kwargs)
        _tidied(self.params)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _tidied([option])
        return option


class Group(TyperGroup):
    def __init__(self, *, help: str | None = None, **kwargs: Any) -> None:
        super().__init__(help=reflowed(help), **kwargs)
        _tidied(self.params)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _tidied([option])
        return option


def use_for(app: typer.Typer) -> None:
    """Every command and group of ``app`` (and of its sub-apps) built from these."""
    app.info.cls = Group
    for command in app.registered_commands:
        command.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_for(group.typer_instance)
