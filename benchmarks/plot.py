"""Draw the benchmark rows as PNG charts: ``python benchmarks/run.py --plot``.

Needs matplotlib, which only the ``bench`` nox session installs. Each chart is drawn
from the rows of the suites that ran; a chart whose rows are missing is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from pathlib import Path

Row = dict[str, object]

GOALS = {  # the in-memory goals, as ratios to their baselines (<= unless noted)
    ("round trip", "reserve+record+exit, 1 dim"): ("round trip, 1 dim", 3.0),
    ("round trip", "reserve+record+exit, 3 dim"): ("round trip, 3 dims", 3.5),
    ("contended", "Budget admitting 10"): ("contended throughput (>=)", 0.5),
    ("wake-up", "Budget hand-over"): ("wake-up latency", 2.0),
    ("kernel", "reserve+settle, 3 dim"): ("kernel reserve+settle, 3 dims", 4.0),
}


def _points(rows: list[Row], group: str) -> list[Row]:
    return sorted(
        (row for row in rows if row.get("group") == group and "x" in row),
        key=lambda row: float(row["x"]),  # type: ignore[arg-type]
    )


def _iqr(row: Row) -> tuple[float, float]:
    low, _, high = str(row["ratio IQR"]).partition("-")
    ratio = float(row["x baseline"])  # type: ignore[arg-type]
    return ratio - float(low), float(high) - ratio


def _save(figure: Any, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _ratio_curve(
    rows: list[Row],
    group: str,
    *,
    xlabel: str,
    title: str,
    out: Path,
    name: str,
    before: list[Row] | None,
) -> Path | None:
    points = _points(rows, group)
    if not points:
        return None
    xs = [float(row["x"]) for row in points]  # type: ignore[arg-type]
    ys = [float(row["x baseline"]) for row in points]  # type: ignore[arg-type]
    errors = list(zip(*(_iqr(row) for row in points)))
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    old = _points(before or [], group)
    if old:
        axes.plot(
            [float(row["x"]) for row in old],  # type: ignore[arg-type]
            [float(row["x baseline"]) for row in old],  # type: ignore[arg-type]
            marker="o",
            linestyle="--",
            color="tab:grey",
            label="before",
        )
    label = "now" if old else "aiobudget, in memory"
    axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=label)
    axes.axhline(1.0, color="grey", linestyle=":", label="async with asyncio.Semaphore")
    axes.set_xscale("log", base=2)
    axes.minorticks_off()
    axes.set_xticks(xs, [f"{x:g}" for x in xs])
    axes.set_ylim(bottom=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("x the semaphore (median, IQR)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    return _save(figure, out, name)


def _queue_chart(rows: list[Row], out: Path, before: list[Row] | None) -> Path | None:
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    drawn = False
    series = (
        ("release", "a release hands budget on", "tab:blue"),
        ("give up", "a waiter gives up", "tab:orange"),
    )
    for what, label, color in series:
        for found, style, suffix in ((before or [], "--", " (before)"), (rows, "-", "")):
            points = _points(found, f"{what} vs queue length")
            if not points:
                continue
            drawn = True
            xs = [float(row["x"]) for row in points]  # type: ignore[arg-type]
            ys = [float(row["value"]) / 1_000 for row in points]  # type: ignore[arg-type]
            axes.plot(xs, ys, marker="o", linestyle=style, color=color, label=label + suffix)
    if not drawn:
        plt.close(figure)
        return None
    axes.set_xscale("log")
    axes.set_ylim(bottom=0)
    axes.set_xlabel("waiters queued behind a head that does not fit")
    axes.set_ylabel("CPU microseconds per operation")
    axes.set_title("Freeing budget does not walk the queue")
    axes.grid(True, alpha=0.3)
    axes.legend()
    return _save(figure, out, "queue-length.png")


def _redis_chart(rows: list[Row], axis: str, out: Path) -> Path | None:
    points = _points(rows, f"redis vs {axis}")
    if not points:
        return None
    xs = [float(row["x"]) for row in points]  # type: ignore[arg-type]
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    axes.plot(xs, [float(row["value"]) for row in points], marker="o", label="reserve+settle")  # type: ignore[arg-type]
    axes.plot(
        xs,
        [float(row["EVALSHA/s"]) for row in points],
        marker="s",
        linestyle="--",  # type: ignore[arg-type]
        label="EVALSHA 'return 1'",
    )
    axes.set_xscale("log")
    axes.minorticks_off()
    axes.set_xticks(xs, [f"{x:g}" for x in xs])
    axes.set_ylim(bottom=0)
    axes.set_xlabel(f"number of {axis}")
    axes.set_ylabel("operations per second, all processes")
    axes.set_title(f"RedisStore against the number of {axis}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    return _save(figure, out, f"redis-vs-{axis}.png")


def _goals_chart(rows: list[Row], out: Path) -> Path | None:
    found = []
    for (group, name), (label, goal) in GOALS.items():
        for row in rows:
            if (
                row.get("group") == group
                and row.get("benchmark") == name
                and row.get("loop", "asyncio") == "asyncio"
            ):
                found.append((label, float(row["x baseline"]), goal))  # type: ignore[arg-type]
                break
    if not found:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.8))
    labels = [label for label, _, _ in found]
    met = [ratio >= goal if "(>=)" in label else ratio <= goal for label, ratio, goal in found]
    axes.barh(
        labels,
        [ratio for _, ratio, _ in found],
        color=["tab:green" if ok else "tab:orange" for ok in met],
        label="measured (green: goal met)",
    )
    axes.scatter(
        [goal for _, _, goal in found],
        labels,
        color="tab:red",
        marker="|",
        s=400,
        label="goal",
        zorder=3,
    )
    for y, (_, ratio, _) in enumerate(found):
        axes.annotate(
            f"{ratio:.2f}", (ratio, y), xytext=(4, 0), textcoords="offset points", va="center"
        )
    axes.invert_yaxis()
    axes.set_xlim(right=max(max(r, g) for _, r, g in found) * 1.15)
    axes.set_xlabel("x the baseline (median)")
    axes.set_title("In-memory figures against their goals (asyncio)")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return _save(figure, out, "goals.png")


def draw(rows: list[Row], out: Path, before: list[Row] | None = None) -> list[Path]:
    """Every chart the rows allow, as PNG files in *out*; their paths. Rows measured
    *before* a change, if given, are drawn dashed beside the scaling curves."""
    charts = [
        _goals_chart(rows, out),
        _ratio_curve(
            rows,
            "round trip vs dimensions",
            xlabel="dimensions of the budget",
            title="Round trip against the number of dimensions",
            out=out,
            name="round-trip-vs-dimensions.png",
            before=before,
        ),
        _ratio_curve(
            rows,
            "round trip vs depth",
            xlabel="levels of the budget tree (reserving on the deepest)",
            title="Round trip against the depth of the budget tree",
            out=out,
            name="round-trip-vs-depth.png",
            before=before,
        ),
        _queue_chart(rows, out, before),
        _redis_chart(rows, "processes", out),
        _redis_chart(rows, "budgets", out),
    ]
    return [chart for chart in charts if chart is not None]
