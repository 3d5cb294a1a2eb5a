"""The command never shows a traceback: bad arguments, dead or wrong Redis servers, a bad
key prefix, Ctrl-C on asyncio and on Trio, and Ctrl-C on a demo spread over processes,
after which nothing stays reserved in Redis."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from aiobudget._cli import main
from aiobudget._cli._common import Failure

if sys.version_info < (3, 11):  # anyio's dependency there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup  # type: ignore[import-not-found]

SRC = Path(__file__).resolve().parents[2] / "src"
DOCUMENTED = {0, 1, 2, 3, 130}  # the exit codes the epilog of --help lists


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _one_line(err: str) -> str:
    """The single line *err* holds; fails on a traceback or on several lines."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 == len(lines), err
    return lines[0]


# -- servers that are not Redis -------------------------------------------------------------


def _serve(answer: bytes | None) -> Iterator[str]:
    """A loopback TCP server that answers every request with *answer*, or never answers
    (None); yields its ``redis://`` URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            held.append(conn)
            if answer is not None:
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        # close() alone leaves a thread blocked in accept() until the join's timeout;
        # shutdown() wakes it at once (Linux answers the blocked accept with EINVAL).
        with contextlib.suppress(OSError):  # refused elsewhere: then the join waits
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        for conn in held:
            conn.close()
        thread.join(5)


@pytest.fixture
def http_server() -> Iterator[str]:
    """A server that speaks HTTP, not Redis."""
    yield from _serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never says a word."""
    yield from _serve(None)


COMMANDS = [
    ["show", "b"],
    ["reset", "b", "--yes"],
    ["set-limit", "b", "tokens", "5", "--yes"],
    ["demo", "--agents", "2", "--calls", "1", "--latency", "0.01"],
]
IDS = ["show", "reset", "set-limit", "demo"]


class TestBadArguments:
    @pytest.mark.parametrize(
        ("argv", "code", "message"),
        [
            (["demo", "--agents", "10001"], 2, "more than 10,000"),
            (["demo", "--agents", str(10**20)], 2, "more than 10,000"),
            (["demo", "--calls", "100000"], 2, "more than 10,000"),
            (["demo", "--processes", "100", "--redis"], 2, "more than 32"),
            (["demo", "--tokens", str(2**63)], 2, "more than"),
            (["demo", "--seed", "x"], 2, "invalid int value"),
            (["demo", "--wait", "nan"], 2, "between 0 and 3600"),
            (["demo", "--usd", "1e400"], 2, "more than 2**63 - 1"),
            (["show", "b", "--redis"], 2, "expected one argument"),
            (["--bogus"], 2, "required"),
            (["set-limit", "b", "tokens", "1" * 30, "--yes"], 2, "is not an amount"),
            (["set-limit", "b", "tokens", "5", "--warn", "x", "--yes", "--redis", ""], 2, "URL"),
        ],
    )
    def test_usage_errors(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
    ) -> None:
        """Each bad argument is a usage error naming the problem, without a traceback."""
        assert code == main(argv)
        err = capsys.readouterr().err
        assert message in err
        assert "Traceback" not in err

    @pytest.mark.parametrize("command", COMMANDS, ids=IDS)
    @pytest.mark.parametrize("prefix", ["{x}", "a{b", "}"])
    def test_a_prefix_with_braces_is_one_line(
        self, capsys: pytest.CaptureFixture[str], command: list[str], prefix: str
    ) -> None:
        """Braces would break the keys' hash tag: one line, exit 2, before any I/O (the
        URL here does not even answer)."""
        pytest.importorskip("redis")
        argv = [*command, "--redis", "redis://127.0.0.1:1/0", "--prefix", prefix]
        assert 2 == main(argv)
        line = _one_line(capsys.readouterr().err)
        assert line.startswith("aiobudget: error: invalid --prefix")

    @pytest.mark.parametrize("orders", ["", "not json", '{"plan": {}}', "[]"])
    def test_a_worker_without_orders(self, orders: str) -> None:
        """The hidden worker mode with no (or bad) orders on stdin is a usage error."""
        result = subprocess.run(
            [sys.executable, "-m", "aiobudget", "demo", "--worker"],
            input=orders,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=30,
            check=False,
        )
        assert 2 == result.returncode
        assert "--worker" in _one_line(result.stderr)


class TestWrongRedis:
    @pytest.mark.parametrize("command", COMMANDS, ids=IDS)
    @pytest.mark.parametrize(
        ("url", "code", "says"),
        [
            ("redis://127.0.0.1:1/0", 1, "cannot reach Redis"),
            ("redis://[::1]:1/0", 1, "cannot reach Redis"),
            ("unix:///nonexistent/redis.sock", 1, "cannot reach Redis"),
            ("redis://127.0.0.1:99999/0", 2, "invalid Redis URL"),
            ("http://127.0.0.1:6379", 2, "invalid Redis URL"),
            ("not a url", 2, "invalid Redis URL"),
            ("redis://127.0.0.1:6379/0?socket_timeout=soon", 2, "invalid Redis URL"),
            ("redis://127.0.0.1:6379/abc", 2, "database number"),
        ],
    )
    def test_dead_or_malformed(
        self,
        *,
        capsys: pytest.CaptureFixture[str],
        command: list[str],
        url: str,
        code: int,
        says: str,
    ) -> None:
        """A Redis that is not there is exit 1, a URL that cannot be one exit 2; one
        line either way."""
        pytest.importorskip("redis")
        assert code == main([*command, "--redis", url])
        assert says in _one_line(capsys.readouterr().err)

    @pytest.mark.parametrize("command", COMMANDS, ids=IDS)
    def test_a_server_that_is_not_redis(
        self, capsys: pytest.CaptureFixture[str], command: list[str], http_server: str
    ) -> None:
        """A server that answers in another protocol is exit 1, in one line."""
        pytest.importorskip("redis")
        assert 1 == main([*command, "--redis", http_server])
        assert "cannot reach Redis" in _one_line(capsys.readouterr().err)

    @pytest.mark.slow
    def test_a_server_that_never_answers(
        self, capsys: pytest.CaptureFixture[str], silent_server: str
    ) -> None:
        """A server that accepts and never answers times out (5 s): exit 1, one line."""
        pytest.importorskip("redis")
        assert 1 == main(["show", "b", "--redis", silent_server])
        assert "cannot reach Redis" in _one_line(capsys.readouterr().err)

    @pytest.mark.redis
    @pytest.mark.parametrize("command", COMMANDS, ids=IDS)
    @pytest.mark.parametrize(
        ("path", "says"),
        [("/999", "DB index is out of range"), ("/0?username=nobody&password=x", "invalid")],
        ids=["database", "user"],
    )
    def test_a_redis_that_refuses(
        self,
        *,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        command: list[str],
        path: str,
        says: str,
    ) -> None:
        """A real Redis refusing the database or the user is exit 1, one line."""
        url = redis_url.rsplit("/", 1)[0] + path
        assert 1 == main([*command, "--redis", url, "--prefix", redis_prefix])
        assert says in _one_line(capsys.readouterr().err)


class TestLastWord:
    """What `main` says about whatever stops a command."""

    @pytest.fixture
    def raising(self, monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
        """Make ``show`` raise the exception put in the returned list."""
        raised: list[BaseException] = []

        def show(_: Any) -> int:
            raise raised[0]

        monkeypatch.setattr("aiobudget._cli.cmd_show", show)
        return raised

    @pytest.mark.parametrize(
        ("exc", "code", "line"),
        [
            (KeyboardInterrupt(), 130, "aiobudget: interrupted"),
            (
                BaseExceptionGroup("", [BaseExceptionGroup("", [KeyboardInterrupt()])]),
                130,
                "aiobudget: interrupted",
            ),
            (ExceptionGroup("", [ValueError("x"), Failure("it broke")]), 1, "it broke"),
            (RuntimeError("oops\nsecond line"), 1, "unexpected RuntimeError: oops second line"),
        ],
        ids=["interrupt", "interrupt-in-a-group", "failure-in-a-group", "bug"],
    )
    def test_one_line_and_a_code(
        self,
        *,
        capsys: pytest.CaptureFixture[str],
        raising: list[BaseException],
        exc: BaseException,
        code: int,
        line: str,
    ) -> None:
        """Ctrl-C anywhere (also inside task groups, as on Trio) is 130; a failure in a
        group speaks for itself; a bug is named in one line."""
        raising.append(exc)
        assert code == main(["show", "b"])
        assert line in _one_line(capsys.readouterr().err)

    def test_a_bug_shows_its_traceback_at_vv(
        self, capsys: pytest.CaptureFixture[str], raising: list[BaseException]
    ) -> None:
        """-vv is how a traceback is asked for."""
        raising.append(RuntimeError("oops"))
        assert 1 == main(["-vv", "show", "b"])
        assert "Traceback" in capsys.readouterr().err

    def test_system_exit_is_not_swallowed(self, raising: list[BaseException]) -> None:
        """SystemExit passes through: it is not a failure of the command."""
        raising.append(SystemExit(4))
        with pytest.raises(SystemExit):
            main(["show", "b"])


# -- Ctrl-C on real processes ---------------------------------------------------------------


class _Demo:
    """``python -m aiobudget demo ...`` in a session of its own, as a shell starts it."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            [sys.executable, "-m", "aiobudget", "demo", "--no-live", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            start_new_session=True,
        )

    def wait_for_progress(self) -> None:
        """Wait for a progress line that shows agents at work, holding reservations."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            active = re.search(r"\| active (\d+)", line)
            assert active is not None, line
            if int(active.group(1)):
                return
        raise AssertionError("the demo ended before any agent was at work")

    def workers(self) -> list[int]:
        """The worker processes of a Redis demo (Linux: read from /proc)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Exit code and stderr, once the process ended."""
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()


def _gone(pids: list[int], timeout: float) -> bool:
    """Whether every process in *pids* ended within *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _reserved(redis_url: str, prefix: str, name: str) -> dict[str, int]:
    """What is reserved on budget *name*, read back with ``aiobudget show``."""
    argv = ["show", name, "--json", "--redis", redis_url, "--prefix", prefix]
    result = subprocess.run(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, "-m", "aiobudget", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
        check=False,
    )
    assert result.returncode in (0, 3), result.stderr
    return {dim: d["reserved"] for dim, d in json.loads(result.stdout)["dims"].items()}


# Long enough (about 15 s) to be interrupted one second in, whatever the machine.
LONG = ["--agents", "12", "--calls", "8", "--latency", "2", "--seed", "5"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")
class TestInterrupted:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_ctrl_c_exits_130_in_one_line(self, backend: str) -> None:
        """Ctrl-C (SIGINT to the foreground process group) stops the demo: exit 130,
        "aiobudget: interrupted", no traceback, on either event loop."""
        demo = _Demo(*LONG, "--backend", backend)
        try:
            demo.wait_for_progress()
            os.killpg(demo.process.pid, signal.SIGINT)
            code, err = demo.finish()
        finally:
            demo.kill()
        assert (130, "aiobudget: interrupted") == (code, _one_line(err))

    def test_sigterm_too(self) -> None:
        """SIGTERM stops the demo the same way."""
        demo = _Demo(*LONG)
        try:
            demo.wait_for_progress()
            demo.process.terminate()
            code, err = demo.finish()
        finally:
            demo.kill()
        assert (130, "aiobudget: interrupted") == (code, _one_line(err))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
class TestInterruptedAcrossProcesses:
    """Ctrl-C on ``demo --redis``: the workers are asked to stop, settle what they hold,
    and exit; the budget in Redis holds no reservation afterwards."""

    def _start(self, redis_url: str, prefix: str, *more: str) -> _Demo:
        demo = _Demo(*LONG, *more, "--processes", "2", "--redis", redis_url, "--prefix", prefix)
        demo.wait_for_progress()
        return demo

    def test_ctrl_c_in_the_terminal(self, redis_url: str, redis_prefix: str) -> None:
        """SIGINT to the whole process group, as a terminal sends it."""
        demo = self._start(redis_url, redis_prefix)
        try:
            workers = demo.workers()
            os.killpg(demo.process.pid, signal.SIGINT)
            code, err = demo.finish()
        finally:
            demo.kill()
        assert (130, "aiobudget: interrupted") == (code, _one_line(err))
        assert _gone(workers, 1)
        assert {"tokens": 0, "cost_micros": 0, "calls": 0} == _reserved(
            redis_url, redis_prefix, "demo"
        )

    def test_sigint_to_the_parent_alone(self, redis_url: str, redis_prefix: str) -> None:
        """``kill -INT`` of the parent only: it asks its workers to stop, and waits."""
        demo = self._start(redis_url, redis_prefix)
        try:
            workers = demo.workers()
            demo.process.send_signal(signal.SIGINT)
            code, err = demo.finish()
        finally:
            demo.kill()
        assert (130, "aiobudget: interrupted") == (code, _one_line(err))
        assert _gone(workers, 1)
        assert {"tokens": 0, "cost_micros": 0, "calls": 0} == _reserved(
            redis_url, redis_prefix, "demo"
        )

    def test_workers_stop_when_the_parent_dies(self, redis_url: str, redis_prefix: str) -> None:
        """A parent killed outright leaves no worker running and nothing reserved: the
        workers see their stdin close, and stop in order."""
        demo = self._start(redis_url, redis_prefix, "--latency", "5")  # a minute's work
        try:
            workers = demo.workers()
            demo.process.kill()
            demo.process.communicate()
            assert _gone(workers, 5)
        finally:
            for pid in workers:  # only if the test failed: never leave them running
                if Path(f"/proc/{pid}").exists():
                    os.kill(pid, signal.SIGKILL)
        assert {"tokens": 0, "cost_micros": 0, "calls": 0} == _reserved(
            redis_url, redis_prefix, "demo"
        )


# Run in the child: make the pty on fd 0 the controlling terminal of the new session, then
# become the demo. No shell stands between the terminal and the demo, so what a shell does
# on SIGINT (dash dies, bash waits) cannot change the exit code the test sees.
_ON_A_TERMINAL = (
    "import fcntl, os, sys, termios; "
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def _typed_ctrl_c(*args: str) -> tuple[int, str]:
    """Run ``aiobudget demo --no-live ARGS`` on a real terminal (a pty whose line
    discipline turns ^C into SIGINT for the foreground process group), type Ctrl-C once
    agents are at work, and return the exit code and what the terminal showed."""
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our command line
            [sys.executable, "-c", _ON_A_TERMINAL, "-m", "aiobudget", "demo", "--no-live", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_env(),
            start_new_session=True,
        )
    finally:
        os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + 60
        while not re.search(rb"\| active [1-9]", shown):
            assert time.monotonic() < deadline, shown.decode(errors="replace")
            chunk = _read_terminal(master)
            assert chunk != b"", shown.decode(errors="replace")
            shown += chunk or b""
        os.write(master, b"\x03")
        while True:
            assert time.monotonic() < deadline + 30, shown.decode(errors="replace")
            chunk = _read_terminal(master)
            if chunk == b"":
                break
            shown += chunk or b""
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, shown.decode(errors="replace")


def _read_terminal(master: int) -> bytes | None:
    """What the terminal shows next: None if nothing within a second, b"" once every
    process holding it has gone (Linux reports that as EIO on the master side)."""
    if not select.select([master], [], [], 1.0)[0]:
        return None
    try:
        return os.read(master, 4096)
    except OSError:
        return b""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
class TestCtrlCTypedInATerminal:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_in_memory(self, backend: str) -> None:
        """^C typed in a terminal: "aiobudget: interrupted", exit 130, no traceback."""
        code, shown = _typed_ctrl_c(*LONG, "--backend", backend)
        assert 130 == code
        assert "aiobudget: interrupted" in shown
        assert "Traceback" not in shown

    @pytest.mark.redis
    def test_across_processes(self, redis_url: str, redis_prefix: str) -> None:
        """^C typed in a terminal on a Redis demo: exit 130 and nothing stays reserved."""
        code, shown = _typed_ctrl_c(
            *LONG, "--processes", "2", "--redis", redis_url, "--prefix", redis_prefix
        )
        assert (130, True) == (code, "Traceback" not in shown)
        assert {"tokens": 0, "cost_micros": 0, "calls": 0} == _reserved(
            redis_url, redis_prefix, "demo"
        )
