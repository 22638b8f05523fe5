"""What the `merak` commands print, and how: one console, lines that never wrap, wide tables."""

from __future__ import annotations

from rich.console import Console

console = Console()


def say(line: str) -> None:
    """One line of `up`/`down` progress, never wrapped (paths and settings stay whole for copying)."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


def wide_console(width: int = 160) -> Console:
    """A console at least `width` columns wide: the tables stay whole, wider than the terminal if need be."""
    return Console(width=max(console.width, width))
