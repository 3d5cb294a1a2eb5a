"""The demo's output: live progress while it runs, and the report at the end."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from .._period import rfc3339
from .._units import COST
from ._common import table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..kernel import Snapshot
    from ._demo_simulation import Plan, Stats

_RESET: Final = "\x1b[0m"
_GREEN: Final = "\x1b[32m"
_YELLOW: Final = "\x1b[33m"
_RED: Final = "\x1b[31m"
_DIM: Final = "\x1b[2m"
_BOLD: Final = "\x1b[1m"


def _money(micros: int, places: int = 6) -> str:
    """Micro-dollars as exact dollars, truncated to *places* decimals."""
    whole, frac = divmod(micros, 1_000_000)
    return f"${whole:,}.{frac:06d}"[: len(f"${whole:,}.") + places]


def _value(dim: str, value: int, places: int = 6) -> str:
    return _money(value, places) if dim == COST else f"{value:,}"


class Display:
    """Progress on stdout: a block redrawn in place on a terminal (``live``), one plain
    line a second otherwise, or nothing (``--json``)."""

    def __init__(self, out: TextIO, mode: str, title: str) -> None:
        self.out = out
        self.mode = mode
        self.title = title
        self.interval = 0.1 if mode == "live" else 1.0
        self._drawn = 0  # lines of the live block on screen
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._glyphs = "█▒░" if encoding == "utf8" else "#=."
        self._color = mode == "live" and "NO_COLOR" not in os.environ

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self._color and text else text

    def update(self, snap: Snapshot, stats: Stats, elapsed: float) -> None:
        if self.mode == "live":
            self._redraw(self._block(snap, stats, elapsed))
        elif self.mode == "lines":
            self.out.write(self._line(snap, stats, elapsed) + "\n")
            self.out.flush()

    def start(self) -> None:
        if self.mode == "live":
            self.out.write("\x1b[?25l")  # hide the cursor while redrawing

    def close(self) -> None:
        if self.mode == "live":
            self.out.write("\x1b[?25h")
            self.out.flush()

    def _redraw(self, lines: list[str]) -> None:
        # Up to the block's first line, then rewrite each line whole (erase, then text).
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    def _block(self, snap: Snapshot, stats: Stats, elapsed: float) -> list[str]:
        columns = shutil.get_terminal_size((100, 24)).columns
        width = max(10, min(40, columns - 60))
        lines = [f"{self._paint(_BOLD, self.title)}  {elapsed:5.1f}s"]
        name_width = max(len(dim) for dim in snap.limits)
        for dim, limit in snap.limits.items():
            spent, reserved = snap.spent[dim], snap.reserved[dim]
            used = spent + reserved
            if used >= limit.limit:
                color = _RED
            elif limit.warn is not None and used >= limit.warn:
                color = _YELLOW
            else:
                color = _GREEN
            full = limit.limit or 1
            a = min(width, spent * width // full)
            b = min(width, used * width // full) - a
            bar = (
                self._paint(color, self._glyphs[0] * a)
                + self._paint(color, self._glyphs[1] * b)
                + self._paint(_DIM, self._glyphs[2] * (width - a - b))
            )
            numbers = f"{_value(dim, spent, 4)} / {_value(dim, limit.limit, 4)}"
            held = f"  +{_value(dim, reserved, 4)} reserved" if reserved else ""
            lines.append(f"  {dim:<{name_width}}  {bar}  {numbers}{self._paint(_DIM, held)}")
        lines.append(
            f"  agents  active {stats.active:3}   waiting {stats.waiting:3}   "
            f"completed {stats.done:3}   denied {stats.denied:3}"
        )
        lines.append(
            f"  results ok {stats.ok:5}   failed {stats.failed:3}   cancelled {stats.cancelled:3}"
        )
        if snap.period_start is not None and snap.resets_at is not None:
            left = max(0.0, snap.resets_at.timestamp() - time.time())
            lines.append(
                f"  window  since {_clock(snap.period_start)}   resets in {left:4.1f}s   "
                f"closed {len(stats.windows)}"
            )
            for window in sorted(stats.windows, key=_start)[-3:]:
                final = "  ".join(
                    f"{dim} {_value(dim, value, 4)}" for dim, value in window["spent"].items()
                )
                lines.append(self._paint(_DIM, f"    closed {_clock(window['start'])}  {final}"))
        return lines

    def _line(self, snap: Snapshot, stats: Stats, elapsed: float) -> str:
        dims = "  ".join(
            f"{dim} {snap.spent[dim]:,}/{limit.limit:,}" for dim, limit in snap.limits.items()
        )
        windows = f" windows closed {len(stats.windows)}" if snap.resets_at is not None else ""
        return (
            f"[{elapsed:5.1f}s] {dims}  | active {stats.active} waiting {stats.waiting} "
            f"completed {stats.done} denied {stats.denied}{windows}"
        )


def _start(window: Mapping[str, Any]) -> datetime:
    """A window's start, for sorting (RFC 3339 text does not sort: ``12Z`` > ``12.5Z``)."""
    return _instant(window["start"])


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _clock(instant: datetime | str) -> str:
    """An instant (a datetime, or RFC 3339 text) as local wall-clock time, to the 0.1 s."""
    if isinstance(instant, str):
        instant = _instant(instant)
    local = instant.astimezone()
    return local.strftime("%H:%M:%S.") + f"{local.microsecond // 100_000}"


# -- the report ----------------------------------------------------------------------------


def make_report(
    plan: Plan,
    *,
    name: str,
    store: str,
    processes: int,
    snap: Snapshot,
    stats: Stats,
    elapsed: float,
) -> dict[str, Any]:
    dims = {}
    for dim, limit in snap.limits.items():
        dims[dim] = {
            "limit": limit.limit,
            "spent": snap.spent[dim],
            "reserved": snap.reserved[dim],
            "remaining": snap.remaining[dim],
            "peak": stats.peak[dim],
            "reserved_total": stats.reserved_total[dim],
            "charged_total": stats.charged_total[dim],
            "refunded": stats.reserved_total[dim] - stats.charged_total[dim],
        }
    # With a period, the ledger is the closed windows plus the open one.
    windows = sorted(stats.windows, key=_start)
    if snap.period_start is not None and snap.resets_at is not None:
        start, end = rfc3339(snap.period_start), rfc3339(snap.resets_at)
        windows.append({"start": start, "end": end, "spent": dict(snap.spent), "open": True})
    recorded = {dim: sum(w["spent"].get(dim, 0) for w in windows) for dim in dims}
    checks = {
        "not_overspent": all(d["spent"] <= d["limit"] for d in dims.values())
        and all(w["spent"][dim] <= dims[dim]["limit"] for w in windows for dim in w["spent"]),
        "peak_within_limit": all(d["peak"] <= d["limit"] for d in dims.values()),
        "nothing_reserved": all(d["reserved"] == 0 for d in dims.values()),
        "ledger_matches": all(
            (recorded[dim] if windows else d["spent"]) == d["charged_total"]
            for dim, d in dims.items()
        ),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "budget": name,
        "store": store,
        "processes": processes,
        "agents": plan.agents,
        "calls_per_agent": plan.calls,
        "seed": plan.seed,
        "elapsed_s": round(elapsed, 3),
        "dims": dims,
        "verdict": {"status": snap.verdict.status.value, "dim": snap.verdict.dim},
        "reservations": stats.granted,
        "calls": {"ok": stats.ok, "failed": stats.failed, "cancelled": stats.cancelled},
        "agents_completed": stats.done,
        "agents_denied": stats.denied,
        "denials": dict(sorted(stats.denials.items())),
        "windows": windows,
    }


_CHECKS: Final = {
    "not_overspent": "nothing was overspent: spent <= limit on every dimension "
    "(from budget.snapshot())",
    "peak_within_limit": "spent + reserved never passed a limit (sampled at every reservation)",
    "nothing_reserved": "every reservation was settled or refunded: reserved is 0",
    "ledger_matches": "spent equals the usage the agents recorded, on every dimension",
}
_WINDOW_CHECKS: Final = {
    "not_overspent": "no window was overspent: spent <= limit in every window of the period",
    "ledger_matches": "the closed windows' spent plus the open one's equal the usage the "
    "agents recorded",
}


def report_text(report: Mapping[str, Any], display: Display) -> str:
    rows = [["dimension", "limit", "spent", "reserved", "peak spent+reserved", "refunded"]]
    for dim, d in report["dims"].items():
        rows.append(
            [dim, *(_value(dim, d[k]) for k in ("limit", "spent", "reserved", "peak", "refunded"))]
        )
    calls = report["calls"]
    by_level: dict[str, list[str]] = {}
    for key, count in report["denials"].items():
        level, dim = key.split(" ", 1)
        by_level.setdefault(level, []).append(f"{dim} {count}")
    denials = "; ".join(
        f"{level} budget{'' if level == 'shared' else 's'}: {', '.join(parts)}"
        for level, parts in sorted(by_level.items(), reverse=True)
    )
    verdict = report["verdict"]
    store = (
        "in memory" if report["store"] == "memory" else f"Redis, {report['processes']} processes"
    )
    lines = [
        "",
        f"Report: budget {report['budget']!r}, {report['agents']} agents, {store}, "
        f"seed {report['seed']}, {report['elapsed_s']:.1f}s",
        table(rows, "  "),
        "",
        f"  calls     {calls['ok']} ok, {calls['failed']} failed, {calls['cancelled']} cancelled "
        f"({report['reservations']} reservations)",
        f"  agents    {report['agents_completed']} completed their work, "
        f"{report['agents_denied']} stopped by a denial",
        f"  denials   {denials or 'none'}",
        f"  verdict   {verdict['status']}" + (f" ({verdict['dim']})" if verdict["dim"] else ""),
        "",
    ]
    windows = report.get("windows") or []
    if windows:
        lines[-1:-1] = ["", "  windows of the period (each closed once, by one process)"]
        window_rows = [["start", "end", *report["dims"]]]
        for w in windows:
            end = _clock(w["end"]) + (" (open)" if w.get("open") else "")
            spent = [_value(dim, w["spent"].get(dim, 0), 4) for dim in report["dims"]]
            window_rows.append([_clock(w["start"]), end, *spent])
        lines[-1:-1] = table(window_rows, "    ").splitlines()
    for key, plain in _CHECKS.items():
        text = _WINDOW_CHECKS.get(key, plain) if windows else plain
        good = report["checks"][key]
        mark = display._paint(_GREEN, "ok  ") if good else display._paint(_RED, "FAIL")
        lines.append(f"  {mark} {text}")
    return "\n".join(lines)
