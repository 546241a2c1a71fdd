"""Progress display shared by long-running commands (rich)."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Silent:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


@contextlib.contextmanager
def progress_bar(show: bool = True):
    """A rich Progress with bar, count and times; a silent stand-in when show=False (tests, library use)."""
    if not show:
        yield _Silent()
        return
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, transient=False) as bar:
        yield bar
