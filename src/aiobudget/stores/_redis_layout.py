"""How `RedisStore` lays budgets out in Redis, in one place: keys, the scripts' argument
header, and the decoding of their replies.

A budget *tree* is a root budget and all its descendants. Every key of a tree starts with
``<prefix>:{<escaped root name>}``: the part in braces is a Redis Cluster *hash tag*, so
the whole tree hashes to one slot and a script may touch a child and all its ancestors
at once (a cluster refuses a script whose keys span slots). The price is that one tree
lives on one shard; different trees spread over the cluster.

Names come from users and are never trusted: they are percent-encoded (everything but
ASCII letters, digits and ``_.-~``), so ``{``, ``}``, ``:``, ``/``, glob characters,
spaces and non-ASCII text can neither break the hash tag nor collide with the separators.
The empty name is ``%`` and unnamed (private) budgets are ``%anon-<uuid>``: neither can
come out of the encoding, which always writes ``%`` followed by two upper-case hex digits.

Keys of one budget at path ``root/child`` (escaped names)::

    <prefix>:{root}/child:s    state: spec, spent, reserved, peak
    <prefix>:{root}/child:l    leases: lease id -> amounts held here (or a tombstone)
    <prefix>:{root}/child:e    lease expiries (server time, ms)
    <prefix>:{root}/child:w    waiter tickets held back here, by arrival number
    <prefix>:{root}:t          the tree's waiter tickets -> expiry (one hash per tree)

and the tree's wake-up channel is ``<prefix>:{root}:wake``. The keys of an unnamed budget
expire once it is idle (see `Level`).

Limits travel as a *spec*, ``dim=limit/warn/headroom,...`` in declaration order (warn
empty for none), compared as text: it is the fingerprint a process checks lazily, with
its first call, against what is stored. A budget with a period has the period's text
after a ``~``: ``calls=100//0~daily;Europe/Berlin;00:00:00``, so the period is stored
and checked with the limits.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final
from urllib.parse import quote, unquote

from .._errors import BackendError, BudgetExceeded, InvalidLimits, ReservationClosed
from .._period import Period
from ..kernel import (
    Crossing,
    Denial,
    Limit,
    Outcome,
    Snapshot,
    Window,
    combine,
    from_micros,
    snapshot_of,
    verdict_table,
)
from ._redis_scripts import text

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "Level",
    "base_of",
    "closed",
    "damaged",
    "denial",
    "escape",
    "every_budget",
    "every_root",
    "exceeded",
    "head",
    "level_keys",
    "maintenance_head",
    "named",
    "outcome",
    "parse_spec",
    "period_of",
    "root_base",
    "root_name",
    "snapshot",
    "spec_of",
    "stored_limits",
    "stored_period",
    "trailer",
    "tree_keys",
    "window_of",
    "windows_closed",
]


def escape(name: str | None) -> str:
    """*name* as it appears in keys; ``None`` (a private budget) gets a fresh unique id."""
    if name is None:
        return f"%anon-{uuid.uuid4().hex}"
    return quote(name, safe="") or "%"


def root_base(prefix: str, name: str | None) -> str:
    """The key base of a top-level budget: its tree's hash tag."""
    return f"{prefix}:{{{escape(name)}}}"


def tree_keys(root: str) -> tuple[str, str]:
    """The tree's tickets key and wake-up channel, from its root's key base."""
    return f"{root}:t", f"{root}:wake"


def level_keys(base: str) -> tuple[str, str, str, str]:
    """The keys of the budget whose keys start with *base*: state, leases, expiries,
    waiters."""
    return (f"{base}:s", f"{base}:l", f"{base}:e", f"{base}:w")


def _glob(prefix: str) -> str:
    """*prefix* as a literal in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def every_budget(prefix: str) -> str:
    """The SCAN pattern matching one key (the lease expiries) of every budget under
    *prefix* that ever held a lease; `base_of` gives back its key base."""
    return _glob(prefix) + ":{*:e"


def every_root(prefix: str) -> str:
    """The SCAN pattern matching the state key of every top-level budget under *prefix*;
    `root_name` gives back its name (None for an unnamed one)."""
    return _glob(prefix) + ":{*}:s"


def root_name(state: str, prefix: str) -> str | None:
    """The name of the top-level budget whose state key is *state*; None if unnamed."""
    escaped = state[len(prefix) + 2 : -3]  # between the braces of "<prefix>:{name}:s"
    if escaped.startswith("%anon-"):
        return None
    return "" if escaped == "%" else unquote(escaped)


def base_of(expiries: str) -> str:
    """The key base of the budget whose lease expiries key is *expiries*."""
    return expiries.removesuffix(":e")


def named(base: str, prefix: str) -> str:
    """The budget whose keys start with *base*, for a message: ``budget 'c' (below 'b')``."""
    root, _, rest = base[len(prefix) + 2 :].partition("}")
    names = [unquote(part) for part in (root, *rest.split("/")[1:])]
    below = f" (below {' / '.join(map(repr, names[:-1]))})" if len(names) > 1 else ""
    return f"budget {names[-1]!r}{below}"


def spec_of(limits: Mapping[str, Limit]) -> str:
    """The canonical text of *limits*."""
    return ",".join(
        f"{dim}={limit.limit}/{'' if limit.warn is None else limit.warn}/{limit.headroom}"
        for dim, limit in limits.items()
    )


def parse_spec(spec: str) -> dict[str, Limit]:
    """The limits in *spec* (as written by `spec_of`, maybe with a period after it);
    ValueError when it is not one."""
    limits = spec.partition("~")[0]
    out: dict[str, Limit] = {}
    for part in limits.split(","):
        dim, _, numbers = part.partition("=")
        limit, warn, headroom = numbers.split("/")
        out[dim] = Limit(int(limit), warn=int(warn) if warn else None, headroom=int(headroom))
    if spec_of(out) != limits:
        raise ValueError(f"not a canonical spec: {spec!r}")
    return out


def period_of(spec: str) -> Period | None:
    """The period stored in *spec*, or None; `InvalidLimits` when it is not one."""
    _, tilde, text = spec.partition("~")
    return Period.from_text(text) if tilde else None


def stored_limits(spec: str, budget: str | None) -> dict[str, Limit]:
    """The limits stored for *budget*; `BackendError` naming it when they are damaged."""
    try:
        return parse_spec(spec)
    except (ValueError, TypeError) as exc:  # InvalidAmount and InvalidLimits included
        raise BackendError(
            f"budget {budget!r} is damaged in Redis: its stored limits {spec!r} are "
            f"unreadable ({exc}); repair it (see RedisStore.repair)"
        ) from None


def stored_period(spec: str, budget: str | None) -> Period | None:
    """The period stored for *budget* (None: it has none); `BackendError` naming it when
    the stored period is unreadable."""
    try:
        return period_of(spec)
    except InvalidLimits as exc:
        raise BackendError(
            f"budget {budget!r} is damaged in Redis: its stored period is unreadable "
            f"({exc}); repair it (see RedisStore.repair)"
        ) from None


@final
class Level:
    """One budget of a chain as the scripts see it: its keys, and how to check it.

    ``check`` is what the next call asks the script to verify: ``"v"`` (the stored limits
    must be ours; create the budget if missing), ``"u"`` (make them ours: opened with
    ``update_limits``), then, once a call succeeded, ``"d"`` (only that the dimensions
    are still the same: other processes may change the limits with ``set_limits``).

    An unnamed budget is private to one `Budget` object, so nobody could find its keys
    once that object is gone: they expire *idle_ms* after its last use (past its last
    lease's expiry). A named budget's keys stay.
    """

    __slots__ = (
        "_hint",
        "base",
        "check",
        "dims",
        "idle",
        "keys",
        "limits",
        "name",
        "outcomes",
        "period",
        "spec",
        "update",
        "verdicts",
    )

    def __init__(
        self,
        base: str,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        update: bool,
        idle_ms: int,
        period: Period | None = None,
    ) -> None:
        self.base = base
        self.name = name
        self.dims = tuple(limits)
        self.limits = dict(limits)
        self.period = period
        self._hint: tuple[int, int, str] | None = None
        self.spec = self._spec()
        self.update = update
        self.check = "u" if update else "v"
        self.idle = str(idle_ms if name is None else 0)
        self.keys = level_keys(base)
        self.verdicts = verdict_table(self.dims)  # index = the scripts' verdict code
        self.outcomes = tuple(Outcome(verdict) for verdict in self.verdicts)

    def child(
        self,
        name: str | None,
        limits: Mapping[str, Limit],
        *,
        update: bool,
        idle_ms: int,
        period: Period | None = None,
    ) -> Level:
        """The level of a child budget *name* of this one."""
        base = f"{self.base}/{escape(name)}"
        return Level(base, name, limits, update=update, idle_ms=idle_ms, period=period)

    @property
    def private(self) -> bool:
        """An unnamed budget: its keys expire once idle."""
        return self.name is None

    def header(self) -> tuple[str, str, str]:
        """The check this level asks of the next script call, and its idle time."""
        return (self.check, ",".join(self.dims) if self.check == "d" else self.spec, self.idle)

    def bind(self) -> None:
        """A call succeeded: the stored limits were ours (or became ours)."""
        self.check = "d"

    def unbind(self) -> None:
        """The budget vanished from Redis: the next call creates it again."""
        self.check = "u" if self.update else "v"

    def set_limits(self, limits: Mapping[str, Limit]) -> None:
        """This process changed the limits."""
        self.limits = dict(limits)
        self.spec = self._spec()

    def _spec(self) -> str:
        period = self.period
        return spec_of(self.limits) + ("" if period is None else f"~{period.text}")

    def adopt_period(self, period: Period | None) -> None:
        """Another process changed the stored period (``update_limits``): follow it, as
        this process follows limits other processes set."""
        self.period = period
        self._hint = None
        self.spec = self._spec()

    def hint(self, now: int) -> str:
        """This level's period argument for a script (see ``lua/_periods.lua``): the
        period's text and four consecutive boundaries around *now* (the store's estimate
        of the server's time, in microseconds), or ``""`` without a period."""
        period = self.period
        if period is None:
            return ""
        cached = self._hint
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        start, end = period.window_us(now)
        before = period.window_us(start - 1)[0]
        after = period.window_us(end)[1]
        text = f"{period.text}|{before},{start},{end},{after}"
        self._hint = (start, end, text)
        return text

    def describe(self) -> str:
        """The budget for a message: its name and where it lives."""
        return f"budget {self.name!r} ({self.keys[0]})"


def head(tree: tuple[str, str], levels: Sequence[Level]) -> tuple[bytes, ...]:
    """KEYS (the tree's tickets, then four per level) and the ARGV header (see
    ``lua/_common.lua``), encoded."""
    keys = [tree[0], *(key for level in levels for key in level.keys)]
    header = [str(len(levels)), tree[1], *(part for level in levels for part in level.header())]
    return tuple(part.encode() for part in (*keys, *header))


def maintenance_head(base: str) -> tuple[bytes, ...]:
    """KEYS and ARGV header of a maintenance script (sweep, repair) on the one budget whose
    keys start with *base*: no limits check, and its keys' expiry left as it is."""
    tickets, channel = tree_keys(base[: base.index("}") + 1])
    parts = (tickets, *level_keys(base), "1", channel, "-", "", "0")
    return tuple(part.encode() for part in parts)


# -- replies -------------------------------------------------------------------------------


def outcome(levels: Sequence[Level], reply: Sequence[Any]) -> Outcome:
    """The chain's `Outcome` from a reply ``[tag, code, crossed, code, crossed, ...]``
    (one pair per level, leaf first), combined as the kernel combines levels."""
    if len(levels) == 1:
        level = levels[0]
        code = int(reply[1])
        if not int(reply[2]):
            return level.outcomes[code]
        verdict = level.verdicts[code]
        return Outcome(verdict, (Crossing(level.name, verdict),))
    each = []
    for i, level in enumerate(levels):
        code = int(reply[1 + 2 * i])
        if int(reply[2 + 2 * i]):
            verdict = level.verdicts[code]
            each.append(Outcome(verdict, (Crossing(level.name, verdict),)))
        else:
            each.append(level.outcomes[code])
    return combine(each)


def denial(levels: Sequence[Level], per_level: Sequence[str], reply: Sequence[Any]) -> Denial:
    """A `Denial` from reserve's ``[DENIED, level, dim, remaining, impossible, queued]``
    (and the periods' trailer, which says when the refusing level resets)."""
    at = int(reply[1]) - 1
    dim = int(reply[2]) - 1
    level = levels[at]
    window = window_of(reply, at)
    return Denial(
        level.name,
        at,
        level.dims[dim],
        int(per_level[at].split(",")[dim]),
        int(reply[3]),
        impossible=bool(int(reply[4])),
        queued=bool(int(reply[5])),
        resets_at=None if window is None else from_micros(window[1]),
    )


def exceeded(levels: Sequence[Level], reply: Sequence[Any]) -> BudgetExceeded:
    """The error of a strict charge refused: ``[EXCEEDED, level, dim, limit, attempted]``."""
    level = levels[int(reply[1]) - 1]
    return BudgetExceeded(
        dim=level.dims[int(reply[2]) - 1],
        limit=int(reply[3]),
        attempted=int(reply[4]),
        budget=level.name,
    )


def closed(reply: Sequence[Any], lease_ttl: float) -> ReservationClosed:
    """The error of a close or extend of a lease that is not live: ``[CLOSED, state]``."""
    return ReservationClosed(
        f"this reservation's lease is {text(reply[1])} (leases live their ttl, {lease_ttl:g} "
        "s by default, unless extended); nothing was changed"
    )


def damaged(levels: Sequence[Level], reply: Sequence[Any]) -> BackendError:
    """The error of a script that found a level's keys damaged: ``[DAMAGED, level, what]``.
    The script wrote nothing."""
    level = levels[int(reply[1]) - 1]
    return BackendError(
        f"{level.describe()} is damaged in Redis: {text(reply[2])}. Nothing was changed. "
        "Keys were deleted, evicted or edited outside aiobudget: repair it with "
        "'aiobudget repair NAME' (RedisStore.repair) or 'await budget.reset(force=True)'"
    )


def snapshot(level: Level, reply: Sequence[Any]) -> Snapshot:
    """A `Snapshot` from the snapshot script's reply ``[OK, spec, spent, reserved, code,
    held, waiting]`` (held: live leases; waiting: live tickets queued here), and the
    periods' trailer for a budget with a period."""
    limits = stored_limits(text(reply[1]), level.name)
    spent = tuple(map(int, text(reply[2]).split(",")))
    reserved = tuple(map(int, text(reply[3]).split(",")))
    window = window_of(reply, 0)
    return snapshot_of(
        limits,
        spent,
        reserved,
        level.verdicts[int(reply[4])],
        held=int(reply[5]),
        waiting=int(reply[6]),
        period_start=None if window is None else from_micros(window[0]),
        resets_at=None if window is None else from_micros(window[1]),
    )


# -- periods (lua/_periods.lua) --------------------------------------------------------------


def trailer(reply: Sequence[Any]) -> Sequence[Any] | None:
    """The periods' trailer ``['W', server time, window per level..., closed...]`` that
    ends the reply of a call on a chain with a period, or None."""
    last = reply[-1]
    return last if isinstance(last, list) and last and text(last[0]) == "W" else None


def window_of(reply: Sequence[Any], level: int) -> tuple[int, int] | None:
    """Level *level*'s current window ``(start, end)`` by the reply's trailer, or None."""
    found = trailer(reply)
    if found is None:
        return None
    window = text(found[2 + level])
    if not window:
        return None
    start, end = window.split(",")
    return int(start), int(end)


def windows_closed(levels: Sequence[Level], reply: Sequence[Any]) -> list[Window]:
    """The windows this call closed, from the trailer's ``level,start,end,spent...``."""
    found = trailer(reply)
    if found is None:
        return []
    out = []
    for closed_ in found[2 + len(levels) :]:
        level, start, end, *spent = text(closed_).split(",")
        owner = levels[int(level) - 1]
        spent_ = MappingProxyType(dict(zip(owner.dims, map(int, spent), strict=True)))
        out.append(Window(owner.name, int(start), int(end), spent_))
    return out
