"""What every benchmark script writes: benchmark.json, and benchmark.md with a table of the targets it checks."""

from __future__ import annotations

import json
from pathlib import Path

from loragen import atomic


def targets_table(title: str, targets: dict, value_format: str = ".3f") -> list[str]:
    """Markdown lines: a heading and one row per target {"value": number or list, "pass": bool or None (no bar)}."""
    lines = [f"# {title}", "", "| target | measured | pass |", "|---|---|---|"]
    for name, t in targets.items():
        value = json.dumps([round(x, 3) for x in t["value"]]) if isinstance(t["value"], list) else format(t["value"], value_format)
        lines.append(f"| {name} | {value} | {'-' if t['pass'] is None else ('yes' if t['pass'] else 'no')} |")
    return lines


def write(out: Path, bench: dict, lines: list[str]) -> None:
    """benchmark.json and benchmark.md into `out` (atomically); the markdown is printed too."""
    atomic.write_json(out / "benchmark.json", bench)
    atomic.write_bytes(out / "benchmark.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
