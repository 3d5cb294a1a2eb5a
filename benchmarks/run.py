"""Run the benchmarks and print one table each: ``nox -s bench`` (or ``python benchmarks/run.py``).

``python benchmarks/run.py kernel budget`` runs a subset; ``--plot`` also draws the
scaling curves as PNG charts (into ``docs/assets/performance/``, or ``--out DIR``), which
needs matplotlib (the ``bench`` nox session installs it); ``--json FILE`` keeps the rows.
Every figure is a ratio to a baseline measured in the same run (see
``benchmarks/_timing.py``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

SUITES = ("kernel", "budget", "scaling", "redis", "redis_scaling", "metrics")
HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--plot", action="store_true", help="draw the scaling curves")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs/assets/performance")
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    parser.add_argument("--repeats", type=int, help="repetitions per figure")
    parser.add_argument("--replot", type=Path, help="draw from rows saved with --json, only")
    parser.add_argument("--before", type=Path, help="rows saved earlier, drawn dashed")
    args = parser.parse_args(argv)
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    # Run as a script, Python puts benchmarks/ first on the path, where benchmarks/redis.py
    # would shadow redis-py: import the suites as a package from the project root instead.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))
    from benchmarks import _timing

    rows: list[dict[str, object]] = []
    before = json.loads(args.before.read_text()) if args.before else None
    if args.replot:
        from benchmarks import plot

        for path in plot.draw(json.loads(args.replot.read_text()), args.out, before):
            print(f"wrote {path}")
        return 0
    for name in args.suites or SUITES:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name} ==", flush=True)
        try:
            found = module.run() if args.repeats is None else module.run(args.repeats)
        except RuntimeError as exc:  # a suite that cannot run here says why
            print(f"skipped: {exc}")
            continue
        print(_timing.format_table(found), flush=True)
        rows += found
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.plot:
        from benchmarks import plot

        for path in plot.draw(rows, args.out, before):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
