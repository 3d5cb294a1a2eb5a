"""``show``, ``reset``, ``set-limit`` and ``repair``: inspect and manage a budget kept in
Redis."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import InvalidLimits
from .._period import Period, rfc3339
from ..kernel import Limit, Snapshot, Status
from ._common import (
    EXIT_EXHAUSTED,
    EXIT_OK,
    BadUsage,
    Failure,
    amount,
    existing,
    open_redis,
    print_json,
    table,
    where,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping


def _snapshot_json(name: str, snap: Snapshot, period: Period | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "period": None if period is None else str(period),
        "period_start": None if snap.period_start is None else rfc3339(snap.period_start),
        "resets_at": None if snap.resets_at is None else rfc3339(snap.resets_at),
        "dims": {
            dim: {
                "limit": limit.limit,
                "warn": limit.warn,
                "headroom": limit.headroom,
                "spent": snap.spent[dim],
                "reserved": snap.reserved[dim],
                "remaining": snap.remaining[dim],
            }
            for dim, limit in snap.limits.items()
        },
        "verdict": {"status": snap.verdict.status.value, "dim": snap.verdict.dim},
        "held": snap.held,
        "waiting": snap.waiting,
    }


def _verdict_text(snap: Snapshot) -> str:
    verdict = snap.verdict
    return verdict.status.value + (f" ({verdict.dim})" if verdict.dim else "")


def _in(seconds: float) -> str:
    """A wait in words: ``3 d 4 h``, ``2 h 5 min``, ``4 min 10 s``, ``12 s``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{value} {unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or "0 s"


def _period_text(snap: Snapshot, period: Period | None) -> str:
    """The period, its current window and when it resets; '' for a budget without one."""
    if snap.resets_at is None or snap.period_start is None:
        return ""
    what = "" if period is None else f"{period}; "
    left = _in(snap.resets_at.timestamp() - time.time())
    return (
        f"\nperiod: {what}this window began {rfc3339(snap.period_start)}, "
        f"resets at {rfc3339(snap.resets_at)} (in {left})"
    )


def _snapshot_text(name: str, snap: Snapshot, where: str, period: Period | None = None) -> str:
    rows = [["dimension", "limit", "warn", "headroom", "spent", "reserved", "remaining"]]
    for dim, limit in snap.limits.items():
        warn = "-" if limit.warn is None else f"{limit.warn:,}"
        rows.append(
            [
                dim,
                f"{limit.limit:,}",
                warn,
                f"{limit.headroom:,}",
                f"{snap.spent[dim]:,}",
                f"{snap.reserved[dim]:,}",
                f"{snap.remaining[dim]:,}",
            ]
        )
    table_text = table(rows, "  ")
    verdict = _verdict_text(snap)
    return (
        f"budget {name!r} ({where})\n{table_text}\nverdict: {verdict}{_period_text(snap, period)}"
        f"\nreservations: {snap.held:,} held, {snap.waiting:,} waiting"
    )


def cmd_show(args: argparse.Namespace) -> int:
    snap, period = anyio.run(_show, args)
    if args.json:
        print_json(_snapshot_json(args.name, snap, period))
    else:
        print(_snapshot_text(args.name, snap, where(args), period))
    return EXIT_EXHAUSTED if snap.verdict.status is Status.EXHAUSTED else EXIT_OK


async def _show(args: argparse.Namespace) -> tuple[Snapshot, Period | None]:
    async with open_redis(args.redis, args.prefix) as store:
        budget = await existing(store, args)
        return await budget.snapshot(), budget.period


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Go on if --yes, or if a person at the terminal says yes; else stop."""
    if args.yes:
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise Failure("not confirmed; nothing was changed")


def _require_confirmation(args: argparse.Namespace) -> None:
    """Destructive commands need --yes when no person can be asked."""
    if not args.yes and not (sys.stdin is not None and sys.stdin.isatty()):
        raise BadUsage(
            f"'{args.command}' changes budget {args.name!r}: pass --yes to confirm "
            "(stdin is not a terminal, so it cannot ask)"
        )


def _print_change(
    args: argparse.Namespace,
    summary: str,
    before: Snapshot,
    after: Snapshot,
    period: Period | None,
    **action: str,
) -> None:
    """What a command changed: *action* and both snapshots as JSON with --json, else
    *summary* and the budget as it is now."""
    if args.json:
        before_json, after_json = (
            _snapshot_json(args.name, before, period),
            _snapshot_json(args.name, after, period),
        )
        print_json({**action, "before": before_json, "after": after_json})
    else:
        print(f"budget {args.name!r}: {summary}")
        print(_snapshot_text(args.name, after, where(args), period))


def cmd_reset(args: argparse.Namespace) -> int:
    _require_confirmation(args)
    # Read, ask (with no connection held open while a person thinks), then act.
    before, period = anyio.run(_show, args)
    spent = ", ".join(f"{dim} {value:,}" for dim, value in before.spent.items())
    _confirm(args, f"reset budget {args.name!r} (spent: {spent}) to 0?")
    after = anyio.run(_reset, args)
    _print_change(args, f"spent reset to 0 (was {spent})", before, after, period, action="reset")
    return EXIT_OK


async def _reset(args: argparse.Namespace) -> Snapshot:
    async with open_redis(args.redis, args.prefix) as store:
        budget = await existing(store, args)
        await budget.reset()
        return await budget.snapshot()


def _new_limits(args: argparse.Namespace, limits: Mapping[str, Limit]) -> dict[str, Limit]:
    """*limits* with DIM's limit (and --warn / --headroom) replaced."""
    dim = args.dim
    if dim not in limits:
        raise BadUsage(f"budget {args.name!r} has no dimension {dim!r}; it has {', '.join(limits)}")
    old = limits[dim]
    value = amount(args.value, "VALUE", dim)
    if args.warn is None:
        warn = old.warn
    elif args.warn.strip().lower() == "none":
        warn = None
    else:
        warn = amount(args.warn, "--warn", dim)
    headroom = old.headroom if args.headroom is None else amount(args.headroom, "--headroom", dim)
    # The old warn level and headroom are kept, unless the new limit is below them.
    for option, level, given in (
        ("--warn", warn, args.warn),
        ("--headroom", headroom, args.headroom),
    ):
        if level is not None and level > value:
            hint = f": pass {option}" + (" (or --warn none)" if option == "--warn" else "")
            kept = " (kept from the old limit)" if given is None else ""
            raise BadUsage(f"{option[2:]} {level:,}{kept} is above the new limit {value:,}{hint}")
    return {**limits, dim: Limit(value, warn=warn, headroom=headroom)}


def cmd_set_limit(args: argparse.Namespace) -> int:
    amount(args.value, "VALUE", args.dim)  # a bad value is a usage error, found before I/O
    _require_confirmation(args)
    before, period = anyio.run(_show, args)
    new = _new_limits(args, before.limits)[args.dim]
    old = before.limits[args.dim]
    _confirm(
        args,
        f"set the {args.dim} limit of budget {args.name!r} from {old.limit:,} to {new.limit:,}?",
    )
    after = anyio.run(_set_limit, args)
    summary = f"{args.dim} limit {old.limit:,} -> {new.limit:,}"
    _print_change(args, summary, before, after, period, action="set-limit", dim=args.dim)
    return EXIT_OK


async def _set_limit(args: argparse.Namespace) -> Snapshot:
    async with open_redis(args.redis, args.prefix) as store:
        budget = await existing(store, args)
        # Re-read: only DIM changes, whatever happened to the others since we asked.
        current = (await budget.snapshot()).limits
        await budget.set_limits(_new_limits(args, current))
        return await budget.snapshot()


def _given_limits(args: argparse.Namespace) -> dict[str, Limit] | None:
    """The limits of ``--limit DIM=VALUE`` (in the order given), or None."""
    if not args.limit:
        return None
    limits: dict[str, Limit] = {}
    for given in args.limit:
        dim, sep, value = given.partition("=")
        if not sep or not dim.strip():
            raise BadUsage(f"--limit {given!r} is not DIM=VALUE")
        limits[dim.strip()] = Limit(amount(value, "--limit", dim.strip()))
    return limits


def cmd_repair(args: argparse.Namespace) -> int:
    limits = _given_limits(args)  # bad values are usage errors, found before I/O
    _require_confirmation(args)
    # Read (a dry run says what would change), ask, then act.
    planned = anyio.run(_repair, args, limits, True)
    if not planned:
        anyio.run(_show, args)  # a budget that does not exist is a failure
        if args.json:
            print_json({"action": "repair", "changes": []})
        else:
            print(f"budget {args.name!r}: nothing to repair")
        return EXIT_OK
    listed = "".join(f"\n  - {change}" for change in planned)
    _confirm(args, f"repair budget {args.name!r}:{listed}\nGo ahead?")
    done = anyio.run(_repair, args, limits, False)
    after, period = anyio.run(_show, args)
    if args.json:
        after_json = _snapshot_json(args.name, after, period)
        print_json({"action": "repair", "changes": done, "after": after_json})
    else:
        print(f"budget {args.name!r} repaired:" + "".join(f"\n  - {change}" for change in done))
        print(_snapshot_text(args.name, after, where(args), period))
    return EXIT_OK


async def _repair(
    args: argparse.Namespace, limits: dict[str, Limit] | None, dry_run: bool
) -> list[str]:
    async with open_redis(args.redis, args.prefix) as store:
        try:
            return await store.repair(args.name, limits, dry_run=dry_run)
        except InvalidLimits as exc:
            hint = "" if limits is not None else " (with --limit DIM=VALUE for each dimension)"
            raise Failure(f"{exc}{hint}") from None
