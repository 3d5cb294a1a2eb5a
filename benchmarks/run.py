"""Run every benchmark and print one table each: ``nox -s bench`` (or ``python benchmarks/run.py``).

Machines here are noisy, so every figure comes with a ratio to a baseline measured in
the same run, the same way. ``python benchmarks/run.py kernel budget`` runs a subset.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

SUITES = ("kernel", "budget", "redis", "metrics")


def _table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str]) -> int:
    # Run as a script, Python puts benchmarks/ first on the path, where benchmarks/redis.py
    # would shadow redis-py: import the suites as a package from the project root instead.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))
    for name in argv or SUITES:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name} ==")
        try:
            rows = module.run()
        except RuntimeError as exc:  # a suite that cannot run here says why
            print(f"skipped: {exc}")
            continue
        print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
