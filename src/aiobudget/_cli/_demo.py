"""``aiobudget demo``: simulated agents share one budget, in memory or through Redis.

In memory, every agent runs in this process. With ``--redis``, worker processes
(``python -m aiobudget demo --worker``) each run a share of the agents against one
budget in Redis, and report their counters to this process as JSON lines.

Ctrl-C (or SIGTERM) stops a demo in order: the agents are cancelled, so every
reservation is settled or given back on the way out. A worker stops likewise at a
signal or when its stdin closes, which is how the parent asks it to (and what happens
when the parent dies); a worker that has not exited a few seconds later is killed.
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
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from anyio.streams.buffered import BufferedByteReceiveStream

from .. import _log
from .._budget import Budget
from .._units import usd
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    BadUsage,
    Failure,
    Interrupted,
    open_redis,
    print_json,
    stop_signals,
)
from ._demo_display import Display, make_report, report_text
from ._demo_simulation import Plan, Simulation, Stats

if TYPE_CHECKING:
    import argparse
    from collections.abc import (
        AsyncIterable,
        Awaitable,
        Callable,
        Iterator,
        Mapping,
        MutableMapping,
    )

    from anyio.abc import Process


_STOP_GRACE: Final = 5.0  # seconds a worker gets to settle and exit before it is killed


def cmd_demo(args: argparse.Namespace) -> int:
    if args.worker:
        return anyio.run(_worker)
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
    with stop_signals() as stopped:  # from the start: a signal while preparing is kept
        return await _run_memory(plan, name, display, stopped, verbose)


async def _run_memory(
    plan: Plan,
    name: str,
    display: Display,
    stopped: Callable[[], Awaitable[None]],
    verbose: int,
) -> dict[str, Any]:
    budget = Budget(plan.limits(), name=name, period=plan.shared_period())
    stats = Stats()
    simulation = Simulation(budget, plan, stats)
    await simulation.prepare(range(plan.agents), reset=False)
    t0 = anyio.current_time()

    async def refresh() -> None:
        if display.mode != "none":
            await _refresh(display, budget, lambda: stats, stats, t0)

    with _windows_into(stats, plan, name, verbose):
        await _alongside(simulation.run, refresh, stopped)
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


class _Orders:
    """Lines from the parent on stdin (a pipe), read without blocking the event loop:
    the orders, then ``go``; the end of the pipe means "stop"."""

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno()
        self._buffer = bytearray()

    async def line(self) -> str | None:
        """The next line, or None once the parent closed the pipe (or went away)."""
        while b"\n" not in self._buffer:
            # Not a pipe (a file, /dev/null) cannot be waited for, nor does it block.
            with contextlib.suppress(OSError):
                await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.decode()

    async def closed(self) -> None:
        """Wait for the end of the pipe (lines before it are ignored), then stop."""
        while await self.line() is not None:
            pass
        raise Interrupted


def _plan_of(line: str | None) -> tuple[Plan, dict[str, Any]]:
    """The orders a parent sends a worker, or a usage error for anything else (the
    orders come on stdin, not argv: a password in the URL stays out of ``ps``)."""
    try:
        orders = json.loads(line or "")
        plan = Plan(**orders["plan"])
        fields = {key: orders[key] for key in ("url", "prefix", "name", "index", "of")}
        fields["verbose"] = int(orders.get("verbose", 0))
    except (ValueError, TypeError, KeyError):
        raise BadUsage(
            "--worker is a Redis demo's worker process: it takes its orders from its parent"
        ) from None
    return plan, fields


async def _worker() -> int:
    """A process of a Redis demo: its share of the agents, counters as JSON lines."""
    orders = _Orders()
    plan, given = _plan_of(await orders.line())
    with stop_signals() as stopped:
        async with open_redis(given["url"], given["prefix"]) as store:
            budget = Budget(
                plan.limits(), name=given["name"], store=store, period=plan.shared_period()
            )
            stats = Stats()
            simulation = Simulation(budget, plan, stats)
            await simulation.prepare(range(given["index"], plan.agents, given["of"]), reset=True)
            _emit({"event": "ready"})
            if await orders.line() != "go":
                return EXIT_FAILURE

            async def report() -> None:
                while True:
                    _emit({"event": "stats", "stats": stats.to_json()})
                    await anyio.sleep(0.2)

            with _windows_into(stats, plan, given["name"], given["verbose"]):
                await _alongside(simulation.run, report, orders.closed, stopped)
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

    async def finish(self) -> None:
        """Read the rest of the output (so that no write blocks) until the process exits."""

        async def discard(stream: AsyncIterable[bytes] | None) -> None:
            if stream is not None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    async for _ in stream:
                        pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(discard, self.process.stdout)
            tg.start_soon(discard, self.process.stderr)
        await self.process.wait()

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


async def _stop(children: list[_Child]) -> None:
    """Stop the workers still running: close their stdin, which asks a worker to stop
    (its reservations are settled on the way out), give them a few seconds, then kill
    what is left. Workers that finished are only reaped."""
    running = [child for child in children if child.process.returncode is None]
    for child in running:
        if child.process.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await child.process.stdin.aclose()
    with anyio.move_on_after(_STOP_GRACE):
        async with anyio.create_task_group() as tg:
            for child in running:
                tg.start_soon(child.finish)
    for child in children:
        if child.process.returncode is None:
            child.process.kill()
        await child.process.aclose()


async def _demo_redis(args: argparse.Namespace, plan: Plan, display: Display) -> dict[str, Any]:
    count = args.processes or 2
    with stop_signals() as stopped:  # from the start: a signal while spawning is kept
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

            try:
                for index in range(count):
                    # One at a time: a process is in the list (for _stop) as soon as it runs.
                    children.append(await _spawn(args, plan, index, count))  # noqa: PERF401
                side = [refresh, *(c.read for c in children), *(c.drain for c in children)]
                with _windows_into(own, plan, args.name, args.verbose):
                    await _alongside(supervise, *side, stopped)
                    elapsed = anyio.current_time() - t0
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(children)
            for child in children:
                if not child.done or child.process.returncode:
                    raise Failure(child.failure())
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
