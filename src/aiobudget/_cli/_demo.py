"""``aiobudget demo``: simulated agents share one budget, in memory or through Redis.

In memory, every agent runs in this process. With ``--redis``, worker processes
(``python -m aiobudget demo --worker``) each run a share of the agents against one
budget in Redis, and report their counters to this process as JSON lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from .. import _log
from .._budget import Budget
from .._units import usd
from ._common import EXIT_FAILURE, EXIT_OK, BadUsage, Failure, open_redis, print_json
from ._demo_display import Display, make_report, report_text
from ._demo_simulation import Plan, Simulation, Stats

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping

    from anyio.abc import Process


def cmd_demo(args: argparse.Namespace) -> int:
    if args.worker:
        # The orders come on stdin, not argv: a password in the URL stays out of `ps`.
        return anyio.run(_worker, json.loads(sys.stdin.readline()))
    if args.processes is not None and args.redis is None:
        raise BadUsage("--processes needs --redis: processes share a budget through Redis")
    if args.redis is not None and args.backend != "asyncio":
        raise BadUsage("the Redis demo runs on asyncio (redis-py's asyncio client)")
    if args.period is not None and args.period <= 0:
        raise BadUsage("--period must be a positive number of seconds")
    agents = args.agents
    latency = args.latency
    plan = Plan(
        agents=agents,
        calls=args.calls,
        seed=random.randrange(100_000) if args.seed is None else args.seed,
        latency=latency,
        wait=2 * latency if args.wait is None else args.wait,
        tokens=9_000 * agents if args.tokens is None else args.tokens,
        cost=usd("0.04") * agents if args.usd is None else args.usd,
        call_limit=7 * agents,
        agent_tokens=14_000,
        period=args.period,
    )
    out = sys.stdout
    mode = "none" if args.json else "live" if out.isatty() and not args.no_live else "lines"
    if mode == "live" and os.environ.get("TERM") == "dumb":
        mode = "lines"
    where = "in memory" if args.redis is None else f"{args.processes or 2} processes, Redis"
    if args.period is not None:
        where += f", renews every {args.period:g} s"
    display = Display(out, mode, f"aiobudget demo: {agents} agents, {where}, seed {plan.seed}")
    display.start()
    try:
        if args.redis is None:
            report = anyio.run(
                _demo_memory, plan, args.name, display, args.verbose, backend=args.backend
            )
        else:
            report = anyio.run(_demo_redis, args, plan, display)
    finally:
        display.close()
    if args.json:
        print_json(report)
    else:
        print(report_text(report, display))
    return EXIT_OK if report["ok"] else EXIT_FAILURE


async def _alongside(
    work: Callable[[], Awaitable[None]], *side: Callable[[], Awaitable[None]]
) -> None:
    """Await *work* while the *side* tasks run; they are cancelled when it ends. The first
    error comes out as itself, never wrapped in an exception group."""
    errors: list[Exception] = []

    async def guarded(function: Callable[[], Awaitable[None]]) -> None:
        try:
            await function()
        except Exception as exc:  # noqa: BLE001 - raised below, unwrapped
            errors.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for function in side:
            tg.start_soon(guarded, function)
        await guarded(work)
        tg.cancel_scope.cancel()
    if errors:
        raise errors[0]


async def _refresh(
    display: Display, budget: Budget, current: Callable[[], Stats], observer: Stats, t0: float
) -> None:
    """Redraw until cancelled, noting the shared budget's peak in *observer*."""
    while True:
        snap = await budget.snapshot()
        observer.observe(snap)
        display.update(snap, current(), anyio.current_time() - t0)
        await anyio.sleep(display.interval)


@contextlib.contextmanager
def _windows_into(stats: Stats, plan: Plan, name: str, verbose: int) -> Iterator[None]:
    """With ``--period``, note every window of the shared budget that this process closes
    (``budget.period_closed``, logged by the process whose call rolled the budget over).
    The command is an application: it may configure logging, as ``logging_for`` does."""
    if plan.period is None:
        yield
        return
    previous = structlog.get_config()

    def capture(
        logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if event.get("event") == _log.PERIOD_CLOSED and event.get("budget") == name:
            stats.window_closed(event)
        return event

    def drop(logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        raise structlog.DropEvent

    if verbose:
        structlog.configure(processors=[capture, *previous["processors"]])
    else:  # the event is INFO: let it through to `capture`, and no further
        structlog.configure(
            processors=[capture, drop],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )
    try:
        yield
    finally:
        structlog.configure(**previous)


async def _demo_memory(plan: Plan, name: str, display: Display, verbose: int) -> dict[str, Any]:
    budget = Budget(plan.limits(), name=name, period=plan.shared_period())
    stats = Stats()
    simulation = Simulation(budget, plan, stats)
    await simulation.prepare(range(plan.agents), reset=False)
    t0 = anyio.current_time()

    async def refresh() -> None:
        if display.mode != "none":
            await _refresh(display, budget, lambda: stats, stats, t0)

    with _windows_into(stats, plan, name, verbose):
        await _alongside(simulation.run, refresh)
        elapsed = anyio.current_time() - t0
        snap = await budget.snapshot()
    stats.observe(snap)
    display.update(snap, stats, elapsed)
    return make_report(
        plan, name=name, store="memory", processes=1, snap=snap, stats=stats, elapsed=elapsed
    )


# -- demo across processes (Redis) ------------------------------------------------------------


def _emit(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _worker(orders: Mapping[str, Any]) -> int:
    """A process of a Redis demo: its share of the agents, counters as JSON lines."""
    plan = Plan(**orders["plan"])
    async with open_redis(orders["url"], orders["prefix"]) as store:
        budget = Budget(
            plan.limits(), name=orders["name"], store=store, period=plan.shared_period()
        )
        stats = Stats()
        simulation = Simulation(budget, plan, stats)
        await simulation.prepare(range(orders["index"], plan.agents, orders["of"]), reset=True)
        _emit({"event": "ready"})
        if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
            return EXIT_FAILURE

        async def report() -> None:
            while True:
                _emit({"event": "stats", "stats": stats.to_json()})
                await anyio.sleep(0.2)

        with _windows_into(stats, plan, orders["name"], orders.get("verbose", 0)):
            await _alongside(simulation.run, report)
    _emit({"event": "done", "stats": stats.to_json()})
    return EXIT_OK


class _Child:
    """One worker process of a Redis demo, seen from the parent."""

    def __init__(self, index: int, process: Process) -> None:
        self.index = index
        self.process = process
        self.stats = Stats()
        self.ready = anyio.Event()
        self.finished = anyio.Event()
        self.drained = anyio.Event()
        self.done = False
        self.stderr = bytearray()

    async def read(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                message = json.loads(await lines.receive_until(b"\n", 1 << 20))
                if "stats" in message:
                    self.stats = Stats.from_json(message["stats"])
                if message["event"] == "ready":
                    self.ready.set()
                elif message["event"] == "done":
                    self.done = True
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            pass
        finally:
            self.ready.set()  # a worker that died is not waited for
            self.finished.set()

    async def drain(self) -> None:
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self.stderr += chunk
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            self.drained.set()

    def failure(self) -> str:
        lines = self.stderr.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit code {self.process.returncode}"
        return f"worker process {self.index} failed: {last}"


def _worker_env() -> dict[str, str]:
    """This environment, with this aiobudget importable first (it may not be installed)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


async def _spawn(args: argparse.Namespace, plan: Plan, index: int, count: int) -> _Child:
    """Start worker process *index* of *count*: ``python -m aiobudget demo --worker``,
    its orders on the first line of its stdin."""
    orders = {
        "plan": dataclasses.asdict(plan),
        "url": args.redis,
        "prefix": args.prefix,
        "name": args.name,
        "index": index,
        "of": count,
        "verbose": args.verbose,
    }
    command = [sys.executable, "-m", "aiobudget", *["-v"] * args.verbose]
    command += ["demo", "--worker"]
    child = _Child(index, await anyio.open_process(command, env=_worker_env()))
    assert child.process.stdin is not None
    await child.process.stdin.send(json.dumps(orders).encode() + b"\n")
    return child


async def _demo_redis(args: argparse.Namespace, plan: Plan, display: Display) -> dict[str, Any]:
    count = args.processes or 2
    async with open_redis(args.redis, args.prefix) as store:
        budget = Budget(
            plan.limits(),
            name=args.name,
            store=store,
            update_limits=True,
            period=plan.shared_period(),
        )
        await budget.reset()  # a fresh start for this run
        children: list[_Child] = []
        try:
            for index in range(count):
                # One at a time: a process is in the list (for cleanup) as soon as it runs.
                children.append(await _spawn(args, plan, index, count))  # noqa: PERF401
            own = Stats()  # the parent's own observations of the shared budget
            started = anyio.Event()
            t0 = 0.0

            def current() -> Stats:
                return Stats.total([own, *(child.stats for child in children)])

            async def supervise() -> None:
                nonlocal t0
                try:
                    with anyio.fail_after(60):
                        for child in children:
                            await child.ready.wait()
                except TimeoutError:
                    raise Failure("the worker processes did not start within 60 s") from None
                for child in children:
                    if child.finished.is_set():
                        await child.drained.wait()
                        raise Failure(child.failure())
                t0 = anyio.current_time()
                for child in children:
                    assert child.process.stdin is not None
                    await child.process.stdin.send(b"go\n")
                started.set()
                for child in children:
                    await child.finished.wait()
                    await child.drained.wait()

            async def refresh() -> None:
                await started.wait()
                if display.mode != "none":
                    await _refresh(display, budget, current, own, t0)

            side = [refresh, *(c.read for c in children), *(c.drain for c in children)]
            with _windows_into(own, plan, args.name, args.verbose):
                await _alongside(supervise, *side)
                elapsed = anyio.current_time() - t0
            for child in children:
                await child.process.wait()
                if not child.done or child.process.returncode:
                    raise Failure(child.failure())
        finally:
            with anyio.CancelScope(shield=True):
                for child in children:
                    if child.process.returncode is None:
                        child.process.kill()
                    await child.process.aclose()
        with _windows_into(own, plan, args.name, args.verbose):
            snap = await budget.snapshot()
        stats = current()
        stats.observe(snap)
        display.update(snap, stats, elapsed)
        return make_report(
            plan,
            name=args.name,
            store="redis",
            processes=count,
            snap=snap,
            stats=stats,
            elapsed=elapsed,
        )
