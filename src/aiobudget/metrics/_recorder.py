"""The counters and the wait-time histogram, kept from aiobudget's own log events.

One `Recorder` per process observes the events `aiobudget._log` emits (the same calls
that feed structlog: no second set of calls in the hot path). It is attached while at
least one exporter is alive and detached after the last one closes, when the hot path
goes back to costing what it costs without metrics.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Final, final

from .. import _log

__all__ = ["BUCKETS", "MAX_BUDGETS", "Recorder", "WaitSink", "label"]

BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds (seconds) of the wait-time histogram's buckets, ``+Inf`` aside."""

MAX_BUDGETS: Final = 10_000
"""Distinct budget names a process keeps counters for; events of further names are not
counted (a guard against names made per request)."""

WaitSink = Callable[[str, str, float], None]
"""Told of each finished wait: budget label, outcome, seconds (the OpenTelemetry
histogram, which is recorded synchronously)."""

Key = tuple[str, ...]


def label(name: object) -> str:
    """A budget's name as a label value: an unnamed budget is ``""``."""
    return name if isinstance(name, str) else ""


@final
class Wait:
    """One histogram series: counts per bucket (not cumulative), the sum, the count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last is above every bound
        self.total = 0.0
        self.count = 0

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for count in self.buckets:
            running += count
            out.append(running)
        return out


@final
class Recorder:
    """Counts events per budget; read by the exporters at collection time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] = set()
        # metric name -> label values -> count; the label names are in `COUNTERS`.
        self._counts: dict[str, defaultdict[Key, int]] = {
            name: defaultdict(int) for name in COUNTERS
        }
        counts = self._counts
        self._granted = counts["aiobudget_reservations_granted"]
        self._settles = counts["aiobudget_reservations_settled"]
        self._refunds = counts["aiobudget_reservations_refunded"]
        self._denials = counts["aiobudget_denials"]
        self._charged = counts["aiobudget_charged"]
        self._given_back = counts["aiobudget_refunded"]
        self._waits: dict[Key, Wait] = {}
        self._sinks: tuple[WaitSink, ...] = ()
        self._users = 0
        self._handlers: dict[str, Callable[[str, Mapping[str, Any]], None]] = {
            _log.RESERVED: self._reserved,
            _log.DENIED: self._denied,
            _log.SETTLED: self._settled,
            _log.RELEASED: self._released,
            _log.ABANDONED: self._released,
            _log.CHARGED: self._charged_now,
            _log.WAITED: self._waited,
        }

    # -- attaching -------------------------------------------------------------------------

    def attach(self, sink: WaitSink | None = None) -> None:
        """An exporter starts: observe events (the first one attaches the observer)."""
        with self._lock:
            if sink is not None:
                self._sinks = (*self._sinks, sink)
            self._users += 1
            if self._users == 1:
                _log.add_observer(self.observe)

    def detach(self, sink: WaitSink | None = None) -> None:
        """An exporter closed: the last one detaches the observer. Counts are kept."""
        with self._lock:
            self._sinks = tuple(each for each in self._sinks if each != sink)
            self._users -= 1
            if self._users == 0:
                _log.remove_observer(self.observe)

    # -- observing -------------------------------------------------------------------------

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """The `aiobudget._log.Observer`: count what *event* says."""
        handler = self._handlers.get(event)
        if handler is None:
            return
        budget = fields.get("budget")
        if budget is None:
            budget = ""
        with self._lock:
            if budget not in self._names:
                if len(self._names) >= MAX_BUDGETS:
                    return
                self._names.add(budget)
            handler(budget, fields)
        if event == _log.WAITED:
            for sink in self._sinks:
                sink(budget, str(fields["outcome"]), float(fields["seconds"]))

    # The handlers run under the lock, once per event: plain dict arithmetic only.

    def _reserved(self, budget: str, fields: Mapping[str, Any]) -> None:
        self._granted[budget,] += 1

    def _denied(self, budget: str, fields: Mapping[str, Any]) -> None:
        self._denials[budget, str(fields.get("dim")), str(fields.get("reason"))] += 1

    def _settled(self, budget: str, fields: Mapping[str, Any]) -> None:
        self._settles[budget,] += 1
        actual: Mapping[str, int] = fields["actual"]
        for dim, held in fields["reserved"].items():
            used = actual.get(dim, 0)
            if used:
                self._charged[budget, dim] += used
            if held > used:
                self._given_back[budget, dim] += held - used

    def _released(self, budget: str, fields: Mapping[str, Any]) -> None:
        self._refunds[budget,] += 1
        for dim, held in fields["reserved"].items():
            if held:
                self._given_back[budget, dim] += held

    def _charged_now(self, budget: str, fields: Mapping[str, Any]) -> None:
        for dim, used in fields["amounts"].items():
            if used:
                self._charged[budget, dim] += used

    def _waited(self, budget: str, fields: Mapping[str, Any]) -> None:
        key = (budget, str(fields["outcome"]))
        wait = self._waits.get(key)
        if wait is None:
            wait = self._waits[key] = Wait()
        seconds = float(fields["seconds"])
        wait.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        wait.total += seconds
        wait.count += 1

    # -- what the exporters read ----------------------------------------------------------

    def snapshot_failed(self, budget: str) -> None:
        """A budget's snapshot could not be read for a collection."""
        with self._lock:
            self._counts["aiobudget_snapshot_errors"][budget,] += 1

    def discovery_failed(self) -> None:
        """The budgets of a store could not be listed for a collection."""
        with self._lock:
            self._counts["aiobudget_discovery_errors"][()] += 1

    def counts(self, metric: str, budgets: set[str]) -> list[tuple[Key, int]]:
        """The series of counter *metric* whose budget is in *budgets* (every series of
        a metric without a budget label)."""
        with self._lock:
            items = list(self._counts[metric].items())
        if not COUNTERS[metric][1] or COUNTERS[metric][1][0] != "budget":
            return items
        return [(key, value) for key, value in items if key[0] in budgets]

    def waits(self, budgets: set[str]) -> list[tuple[Key, list[int], float, int]]:
        """Per (budget, outcome) in *budgets*: cumulative bucket counts (``+Inf`` last),
        the sum of seconds and the count."""
        with self._lock:
            return [
                (key, wait.cumulative(), wait.total, wait.count)
                for key, wait in self._waits.items()
                if key[0] in budgets
            ]


COUNTERS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "aiobudget_reservations_granted": ("Reservations granted.", ("budget",)),
    "aiobudget_reservations_settled": (
        "Reservations settled (recorded usage charged, the rest refunded).",
        ("budget",),
    ),
    "aiobudget_reservations_refunded": (
        "Reservations given back whole: nothing recorded, failed, cancelled or released.",
        ("budget",),
    ),
    "aiobudget_denials": (
        "Reservations (and strict charges) refused, by the dimension that did not fit and "
        "why: full, queued, impossible, request_limit or strict_charge.",
        ("budget", "dim", "reason"),
    ),
    "aiobudget_charged": ("Amounts charged to spent (settles and charges).", ("budget", "dim")),
    "aiobudget_refunded": ("Amounts reserved and given back unused.", ("budget", "dim")),
    "aiobudget_snapshot_errors": (
        "Collections that could not read a budget's snapshot (its values were left out).",
        ("budget",),
    ),
    "aiobudget_discovery_errors": (
        "Collections that could not list the budgets of a store.",
        (),
    ),
}
"""Counter name (without ``_total``) -> (help, label names)."""

RECORDER: Final = Recorder()
"""The process's recorder, shared by every exporter."""
