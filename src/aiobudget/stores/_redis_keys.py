"""How `RedisStore` lays budgets out in Redis: escaped names, hash-tagged keys, limits as text.

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

and the tree's wake-up channel is ``<prefix>:{root}:wake``.

Limits travel as a *spec*, ``dim=limit/warn/headroom,...`` in declaration order (warn
empty for none), compared as text: it is the fingerprint a process checks lazily, with
its first call, against what is stored. A budget with a period has the period's text
after a ``~``: ``calls=100//0~daily;Europe/Berlin;00:00:00``, so the period is stored
and checked with the limits.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import quote

from .._period import Period
from ..kernel import CONTINUE, Crossing, Limit, Outcome, Status, Verdict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Level", "escape", "outcome", "parse_spec", "period_of", "spec_of"]

_RANK: Final = {Status.CONTINUE: 0, Status.WARN: 1, Status.EXHAUSTED: 2}


def escape(name: str | None) -> str:
    """*name* as it appears in keys; ``None`` (a private budget) gets a fresh unique id."""
    if name is None:
        return f"%anon-{uuid.uuid4().hex}"
    return quote(name, safe="") or "%"


def spec_of(limits: Mapping[str, Limit]) -> str:
    """The canonical text of *limits*."""
    return ",".join(
        f"{dim}={limit.limit}/{'' if limit.warn is None else limit.warn}/{limit.headroom}"
        for dim, limit in limits.items()
    )


def parse_spec(spec: str) -> dict[str, Limit]:
    """The limits in *spec* (as written by `spec_of`, maybe with a period after it)."""
    out: dict[str, Limit] = {}
    for part in spec.partition("~")[0].split(","):
        dim, _, numbers = part.partition("=")
        limit, warn, headroom = numbers.split("/")
        out[dim] = Limit(int(limit), warn=int(warn) if warn else None, headroom=int(headroom))
    return out


def period_of(spec: str) -> Period | None:
    """The period stored in *spec*, or None."""
    _, tilde, text = spec.partition("~")
    return Period.from_text(text) if tilde else None


@final
class Level:
    """One budget of a chain as the scripts see it: its keys, and how to check it.

    ``check`` is what the next call asks the script to verify: ``"v"`` (the stored limits
    must be ours; create the budget if missing), ``"u"`` (make them ours: opened with
    ``update_limits``), then, once a call succeeded, ``"d"`` (only that the dimensions
    are still the same: other processes may change the limits with ``set_limits``).
    """

    __slots__ = (
        "_hint",
        "base",
        "check",
        "dims",
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
        self.keys = (f"{base}:s", f"{base}:l", f"{base}:e", f"{base}:w")
        # Index = the script's code: 0 CONTINUE, k WARN on dim k, n + k EXHAUSTED on dim k.
        self.verdicts = (
            CONTINUE,
            *(Verdict(Status.WARN, dim) for dim in self.dims),
            *(Verdict(Status.EXHAUSTED, dim) for dim in self.dims),
        )
        self.outcomes = tuple(Outcome(verdict) for verdict in self.verdicts)

    def header(self) -> tuple[str, str]:
        """The check this level asks of the next script call."""
        return (self.check, ",".join(self.dims) if self.check == "d" else self.spec)

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


def outcome(levels: Sequence[Level], reply: Sequence[Any]) -> Outcome:
    """The chain's `Outcome` from a reply ``[tag, code, crossed, code, crossed, ...]``:
    the worst verdict (the nearest level on a tie) and every crossing, as kernel
    ``_combine`` builds it."""
    if len(levels) == 1:
        level = levels[0]
        code = int(reply[1])
        if not int(reply[2]):
            return level.outcomes[code]
        verdict = level.verdicts[code]
        return Outcome(verdict, (Crossing(level.name, verdict, 0),))
    worst = CONTINUE
    crossings: list[Crossing] = []
    for i, level in enumerate(levels):
        verdict = level.verdicts[int(reply[1 + 2 * i])]
        if _RANK[verdict.status] > _RANK[worst.status]:
            worst = verdict
        if int(reply[2 + 2 * i]):
            crossings.append(Crossing(level.name, verdict, i))
    return Outcome(worst, tuple(crossings))
