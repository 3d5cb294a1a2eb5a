"""The ``aiobudget`` command: run in-process through `main`, or as a real process."""

from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import structlog.testing

from aiobudget import CALLS, TOKENS, Budget, Limit, Period
from aiobudget._cli import main

SRC = Path(__file__).resolve().parents[2] / "src"
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
# A small, quick demo: 8 agents, 3 calls each, 20 ms per call.
SMALL = ["demo", "--agents", "8", "--calls", "3", "--latency", "0.02", "--seed", "3"]


def _env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's aiobudget."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.pop("NO_COLOR", None)
    return env


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our arguments
        [sys.executable, "-m", "aiobudget", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        check=False,
    )


def _demo_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main([*SMALL, *args, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _assert_sound(report: Mapping[str, Any]) -> None:
    """What the demo exists to show: nothing overspent, nothing lost, nothing held."""
    assert report["ok"] is True
    assert all(report["checks"].values())
    for d in report["dims"].values():
        assert d["spent"] <= d["limit"]
        assert d["peak"] <= d["limit"]
        assert d["reserved"] == 0
        assert d["spent"] == d["charged_total"]
        assert d["refunded"] == d["reserved_total"] - d["charged_total"]


@pytest.fixture(autouse=True)
def _structlog_defaults() -> Iterator[None]:
    """Every test starts and ends with structlog unconfigured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


class TestHelp:
    def test_help_lists_commands_and_exit_codes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help exits 0 and documents the subcommands and the exit codes."""
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        for word in ("demo", "show", "reset", "set-limit", "exit codes", "3    the budget"):
            assert word in out

    def test_each_subcommand_has_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Every subcommand answers --help with its options."""
        for command, option in (
            ("demo", "--agents"),
            ("show", "--redis"),
            ("reset", "--yes"),
            ("set-limit", "--warn"),
            ("metrics", "--port"),
        ):
            assert main([command, "--help"]) == 0
            assert option in capsys.readouterr().out

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--version prints the package version."""
        import aiobudget

        assert main(["--version"]) == 0
        assert capsys.readouterr().out.strip() == f"aiobudget {aiobudget.__version__}"

    def test_python_dash_m(self) -> None:
        """``python -m aiobudget --help`` works in a real process."""
        result = _run("--help")
        assert result.returncode == 0
        assert "usage: aiobudget" in result.stdout
        assert "exit codes" in result.stdout


class TestBadUsage:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            ([], "required"),
            (["frobnicate"], "invalid choice"),
            (["demo", "--agents", "0"], "is not positive"),
            (["demo", "--agents", "many"], "is not an integer"),
            (["demo", "--latency", "-1"], "between 0 and 3600"),
            (["demo", "--usd", "lots"], "not a number"),
            (["demo", "--processes", "2"], "--processes needs --redis"),
            (["demo", "--redis", UNREACHABLE, "--backend", "trio"], "runs on asyncio"),
            (["show"], "required: NAME"),
            (["set-limit", "b", "tokens"], "required: VALUE"),
            (["set-limit", "b", "tokens", "lots", "--yes"], "VALUE 'lots' is not an amount"),
            (["set-limit", "b", "tokens", "-5", "--yes"], "is not an amount"),
            (["set-limit", "b", "tokens", "$5", "--yes"], "'tokens' is not 'cost_micros'"),
            (["show", "b", "--redis", "nonsense://x"], "invalid Redis URL"),
            (["metrics", "--port", "x"], "invalid int value"),
            (["metrics", "--timeout", "-1"], "between 0 and 3600"),
            (["metrics", "--redis", "nonsense://x"], "invalid Redis URL"),
            (["repair", "b", "--limit", "tokens", "--yes"], "is not DIM=VALUE"),
            (["repair", "b", "--limit", "tokens=lots", "--yes"], "is not an amount"),
        ],
    )
    def test_exit_2_with_a_clear_message(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        """Bad arguments exit 2 with a message naming the problem, and no traceback."""
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err
        assert "error:" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        "command", [["reset", "b"], ["set-limit", "b", "tokens", "10"], ["repair", "b"]]
    )
    def test_destructive_commands_need_yes_without_a_terminal(
        self, capsys: pytest.CaptureFixture[str], command: list[str]
    ) -> None:
        """Without a terminal to ask on, reset and set-limit refuse (2) unless --yes,
        before touching Redis (the URL here does not even answer)."""
        assert main([*command, "--redis", UNREACHABLE]) == 2
        err = capsys.readouterr().err
        assert "pass --yes" in err


class TestDemo:
    def test_json_report_shows_no_overspend(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The JSON report is the only output, and it proves the budget was kept."""
        report = _demo_json(capsys)
        _assert_sound(report)
        assert report["store"] == "memory"
        assert report["agents"] == 8
        assert report["seed"] == 3
        assert set(report["dims"]) == {"tokens", "cost_micros", "calls"}
        assert report["agents_completed"] + report["agents_denied"] == 8

    def test_a_tight_budget_denies_and_still_holds(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """When the budget runs out, agents are denied, spend stays within the limit, and
        reservations that were not used are refunded."""
        report = _demo_json(capsys, "--tokens", "15000")
        _assert_sound(report)
        assert report["agents_denied"] > 0
        assert sum(report["denials"].values()) == report["agents_denied"]
        assert report["dims"]["tokens"]["spent"] <= 15_000
        assert report["dims"]["tokens"]["refunded"] > 0

    def test_same_seed_same_run(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With room for every call, a seed fixes what every agent does and uses."""
        roomy = ["--tokens", "10000000", "--usd", "1000", "--wait", "1"]
        first, second = _demo_json(capsys, *roomy), _demo_json(capsys, *roomy)
        assert first["agents_denied"] == 0
        assert {d: v["spent"] for d, v in first["dims"].items()} == {
            d: v["spent"] for d, v in second["dims"].items()
        }
        assert first["calls"] == second["calls"]
        assert (
            first["dims"]["calls"]["limit"]
            >= first["dims"]["calls"]["spent"]
            == 8 * 3 - (first["calls"]["cancelled"])
        )

    def test_on_trio(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The demo runs on trio as well as asyncio."""
        _assert_sound(_demo_json(capsys, "--backend", "trio"))

    def test_plain_progress_lines_when_not_a_terminal(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Piped output gets plain progress lines and a text report, with no ANSI codes."""
        assert main(SMALL) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out
        assert re.search(r"^\[\s*0\.\d+s\] tokens \S+/\S+", out, re.MULTILINE)
        assert "active" in out
        assert "waiting" in out
        assert "completed" in out
        assert "denied" in out
        assert "ok   nothing was overspent: spent <= limit on every dimension" in out
        assert "FAIL" not in out
        assert "peak spent+reserved" in out
        assert "refunded" in out

    def test_logs_go_to_stderr_with_verbose_and_config_is_restored(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """-v prints aiobudget's log events on stderr (not stdout, which holds the JSON);
        afterwards structlog is configured as it was before."""
        assert main(["-v", *SMALL, "--tokens", "8000", "--json"]) == 0
        captured = capsys.readouterr()
        assert "budget.denied" in captured.err
        json.loads(captured.out)
        assert not structlog.is_configured()

    def test_quiet_by_default(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without -v the expected denials log nothing anywhere."""
        assert main([*SMALL, "--tokens", "8000", "--json"]) == 0
        captured = capsys.readouterr()
        assert "budget." not in captured.err
        assert "budget." not in captured.out.replace('"budget": "demo"', "")

    def test_a_budget_that_renews(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--period renews the shared budget: the report lists the windows, each closed
        once, and checks that none was overspent and that the closed windows plus the open
        one add up to what the agents recorded."""
        report = _demo_json(capsys, "--latency", "0.05", "--period", "0.1", "--tokens", "12000")
        assert report["ok"] is True
        windows = report["windows"]
        assert len(windows) >= 2
        assert windows[-1]["open"] is True
        starts = [_parse(w["start"]) for w in windows]
        assert starts == sorted(set(starts))
        for dim, d in report["dims"].items():
            assert d["charged_total"] == sum(w["spent"][dim] for w in windows)
            assert all(w["spent"][dim] <= d["limit"] for w in windows)

    def test_a_budget_that_renews_in_text(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The text report shows the windows of the period and the per-window checks."""
        assert main([*SMALL, "--latency", "0.05", "--period", "0.1"]) == 0
        out = capsys.readouterr().out
        assert "windows closed" in out
        assert "windows of the period (each closed once, by one process)" in out
        assert "(open)" in out
        assert "ok   no window was overspent" in out
        assert "ok   the closed windows' spent plus the open one's equal" in out

    def test_period_must_be_positive(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--period 0 is a usage error."""
        assert main([*SMALL, "--period", "0"]) == 2
        assert "--period must be a positive number of seconds" in capsys.readouterr().err

    def test_live_display_on_a_terminal(self) -> None:
        """On a terminal the demo redraws a block in place with ANSI codes, then prints
        the report; the cursor is hidden during the redraws and shown again."""
        master, slave = os.openpty()
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            [sys.executable, "-m", "aiobudget", *SMALL, "--latency", "0.1"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**_env(), "TERM": "xterm"},
        )
        os.close(slave)
        output = bytearray()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1)
                if not ready:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                output += chunk
        finally:
            os.close(master)
        assert process.wait(timeout=10) == 0
        text = output.decode()
        assert "\x1b[?25l" in text  # cursor hidden
        assert text.count("\x1b[2K") > 10  # lines erased and rewritten
        assert len(re.findall(r"\x1b\[\d+F", text)) >= 2  # back up to redraw, twice or more
        assert "\x1b[?25h" in text  # cursor shown again
        assert "nothing was overspent" in text
        assert "Traceback" not in text


class TestUnreachableRedis:
    @pytest.mark.parametrize(
        "argv",
        [
            ["show", "b", "--redis", UNREACHABLE],
            ["show", "b", "--json", "--redis", UNREACHABLE],
            ["reset", "b", "--yes", "--redis", UNREACHABLE],
            ["set-limit", "b", "tokens", "5", "--yes", "--redis", UNREACHABLE],
            ["demo", "--agents", "2", "--redis", UNREACHABLE],
            ["metrics", "--port", "0", "--redis", UNREACHABLE],
        ],
    )
    def test_one_line_and_exit_1(self, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
        """Redis not answering is an operational failure: exit 1, one line naming the
        URL on stderr, no traceback."""
        pytest.importorskip("redis")
        assert main(argv) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("aiobudget: error:")
        assert "127.0.0.1:1" in lines[0]
        assert "Traceback" not in captured.err

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:s3cret@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
            ("redis://me:s3cret@127.0.0.1:1/0", "redis://me:***@127.0.0.1:1/0"),
            ("redis://127.0.0.1:1/0?password=s3cret", "redis://127.0.0.1:1/0?password=%2A%2A%2A"),
        ],
    )
    def test_password_is_not_shown(
        self, capsys: pytest.CaptureFixture[str], url: str, shown: str
    ) -> None:
        """A password in the URL never reaches the terminal."""
        pytest.importorskip("redis")
        assert main(["show", "b", "--redis", url]) == 1
        err = capsys.readouterr().err
        assert "s3cret" not in err
        assert f"cannot reach Redis at {shown}:" in err

    def test_in_a_real_process(self) -> None:
        """From a shell: exit 1, one line, no traceback."""
        pytest.importorskip("redis")
        result = _run("show", "b", "--redis", UNREACHABLE)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


# -- against a real Redis -----------------------------------------------------------------


class _Terminal(io.StringIO):
    """A stdin that is a terminal, with a person's answer typed in."""

    def isatty(self) -> bool:
        return True


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _put(
    url: str,
    prefix: str,
    name: str,
    limits: Mapping[str, Limit | int],
    *,
    period: Period | None = None,
    **spent: int,
) -> None:
    """Create budget *name* in Redis (with *period*) and charge *spent*."""
    from redis.asyncio import Redis

    from aiobudget.stores.redis import RedisStore

    async def go() -> None:
        client = Redis.from_url(url)
        try:
            store = RedisStore(client, prefix=prefix)
            budget = Budget(limits, name=name, store=store, period=period)
            await budget.charge(spent)
        finally:
            await client.aclose()

    with structlog.testing.capture_logs():  # this setup's own log events stay out of stdout
        anyio.run(go)


def _hold(url: str, prefix: str, name: str, limits: Mapping[str, Limit | int], **held: int) -> None:
    """Take a reservation on budget *name* and leave it live, as a process that died."""
    from redis.asyncio import Redis

    from aiobudget.stores.redis import RedisStore

    async def go() -> None:
        client = Redis.from_url(url)
        try:
            budget = Budget(limits, name=name, store=RedisStore(client, prefix=prefix))
            account = budget._account
            await account.reserve(account.vector(held), use_headroom=False, timeout=None)
        finally:
            await client.aclose()

    with structlog.testing.capture_logs():
        anyio.run(go)


def _edit(url: str, key: str, **fields: str) -> None:
    """Set fields of a hash by hand, as an operator (or a bug) might."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.hset(key, mapping=fields)
    finally:
        client.close()


@pytest.fixture
def redis_args(redis_url: str, redis_prefix: str) -> list[str]:
    """``--redis URL --prefix P`` of a real Redis and this test's own key prefix."""
    pytest.importorskip("aiobudget.stores.redis")
    return ["--redis", redis_url, "--prefix", redis_prefix]


STORED = {TOKENS: Limit(10_000, warn=8_000), CALLS: 50}  # the limits of `stored`


@pytest.fixture
def stored(redis_url: str, redis_prefix: str, redis_args: list[str]) -> str:
    """A budget 'tenant-7' in Redis: tokens 1,200 of 10,000 (warn 8,000), calls 3 of 50."""
    _put(
        redis_url,
        redis_prefix,
        "tenant-7",
        STORED,
        tokens=1_200,
        calls=3,
    )
    return "tenant-7"


@pytest.mark.redis
class TestWithRedis:
    def _show(self, capsys: pytest.CaptureFixture[str], redis_args: list[str], name: str) -> Any:
        code = main(["show", name, "--json", *redis_args])
        return code, json.loads(capsys.readouterr().out)

    def test_show_json(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """show --json gives limits, spent, reserved, remaining and the verdict."""
        code, shown = self._show(capsys, redis_args, stored)
        assert code == 0
        assert shown == {
            "name": "tenant-7",
            "period": None,
            "period_start": None,
            "resets_at": None,
            "dims": {
                "tokens": {
                    "limit": 10_000,
                    "warn": 8_000,
                    "headroom": 0,
                    "spent": 1_200,
                    "reserved": 0,
                    "remaining": 8_800,
                },
                "calls": {
                    "limit": 50,
                    "warn": None,
                    "headroom": 0,
                    "spent": 3,
                    "reserved": 0,
                    "remaining": 47,
                },
            },
            "verdict": {"status": "continue", "dim": None},
            "held": 0,
            "waiting": 0,
        }

    def test_show_text(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """show prints a table a person can read."""
        assert main(["show", stored, *redis_args]) == 0
        out = capsys.readouterr().out
        assert "budget 'tenant-7'" in out
        assert re.search(r"tokens\s+10,000\s+8,000\s+0\s+1,200\s+0\s+8,800", out)
        assert "verdict: continue" in out
        assert "reservations: 0 held, 0 waiting" in out

    def test_show_counts_held_reservations(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
        stored: str,
    ) -> None:
        """show says how many reservations are held and waiting, in text and JSON."""
        for _ in range(2):
            _hold(redis_url, redis_prefix, stored, STORED, tokens=100)
        assert main(["show", stored, *redis_args]) == 0
        assert "reservations: 2 held, 0 waiting" in capsys.readouterr().out
        _, shown = self._show(capsys, redis_args, stored)
        assert (2, 0, 200) == (shown["held"], shown["waiting"], shown["dims"]["tokens"]["reserved"])

    def test_show_a_budget_with_a_period(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
    ) -> None:
        """show prints the period, when the window began and when it resets; --json
        gives them in RFC 3339."""
        monthly = Period.monthly(tz="Europe/Berlin")
        _put(redis_url, redis_prefix, "key-7", {CALLS: 300}, period=monthly, calls=20)
        assert main(["show", "key-7", *redis_args]) == 0
        out = capsys.readouterr().out
        start, end = monthly.window(datetime.now(timezone.utc))
        assert (
            f"period: monthly on day 1 at 00:00 (Europe/Berlin); this window began "
            f"{_z(start)}, resets at {_z(end)} (in " in out
        )
        code, shown = self._show(capsys, redis_args, "key-7")
        assert 0 == code
        assert ("monthly on day 1 at 00:00 (Europe/Berlin)", _z(start), _z(end)) == (
            shown["period"],
            shown["period_start"],
            shown["resets_at"],
        )
        # reset and set-limit open it as stored, period included.
        assert main(["set-limit", "key-7", "calls", "400", "--yes", *redis_args]) == 0
        assert "period: monthly on day 1" in capsys.readouterr().out
        assert main(["reset", "key-7", "--yes", *redis_args]) == 0
        capsys.readouterr()
        assert 400 == self._show(capsys, redis_args, "key-7")[1]["dims"]["calls"]["limit"]

    def test_show_unknown_budget(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str]
    ) -> None:
        """An unknown name is a failure (1) that says where it looked."""
        assert main(["show", "nobody", *redis_args]) == 1
        assert "no budget named 'nobody'" in capsys.readouterr().err

    def test_show_exhausted_exits_3(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
    ) -> None:
        """A script can tell an exhausted budget by the exit code 3."""
        _put(redis_url, redis_prefix, "spent", {TOKENS: 100}, tokens=100)
        code, shown = self._show(capsys, redis_args, "spent")
        assert code == 3
        assert shown["verdict"] == {"status": "exhausted", "dim": "tokens"}

    def test_reset_with_yes(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """reset --yes sets spent to 0 and reports before and after."""
        assert main(["reset", stored, "--yes", "--json", *redis_args]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["before"]["dims"]["tokens"]["spent"] == 1_200
        assert result["after"]["dims"]["tokens"]["spent"] == 0
        assert self._show(capsys, redis_args, stored)[1]["dims"]["calls"]["spent"] == 0

    @pytest.mark.parametrize("case", [("y\n", 0, 0), ("n\n", 1, 1_200)])
    def test_reset_asks_on_a_terminal(
        self,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        redis_args: list[str],
        stored: str,
        case: tuple[str, int, int],
    ) -> None:
        """On a terminal reset asks first; only 'y' resets (exit 1 and no change on 'n')."""
        answer, code, spent = case
        monkeypatch.setattr(sys, "stdin", _Terminal(answer))
        assert main(["reset", stored, *redis_args]) == code
        assert "[y/N]" in capsys.readouterr().err
        monkeypatch.undo()
        assert self._show(capsys, redis_args, stored)[1]["dims"]["tokens"]["spent"] == spent

    def test_set_limit(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """set-limit changes one dimension's limit and keeps its warn level."""
        assert main(["set-limit", stored, "tokens", "20_000", "--yes", *redis_args]) == 0
        assert "tokens limit 10,000 -> 20,000" in capsys.readouterr().out
        dims = self._show(capsys, redis_args, stored)[1]["dims"]
        assert (dims["tokens"]["limit"], dims["tokens"]["warn"]) == (20_000, 8_000)
        assert dims["calls"]["limit"] == 50

    def test_set_limit_below_warn_needs_a_new_warn(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """A limit below the kept warn level is refused (2) until --warn says what to do."""
        assert main(["set-limit", stored, "tokens", "5000", "--yes", *redis_args]) == 2
        assert "pass --warn" in capsys.readouterr().err
        argv = ["set-limit", stored, "tokens", "5000", "--warn", "none", "--yes", "--json"]
        assert main([*argv, *redis_args]) == 0
        after = json.loads(capsys.readouterr().out)["after"]["dims"]["tokens"]
        assert (after["limit"], after["warn"]) == (5_000, None)

    def test_set_limit_unknown_dimension(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str], stored: str
    ) -> None:
        """Naming a dimension the budget lacks is a usage error listing the real ones."""
        assert main(["set-limit", stored, "pixels", "5", "--yes", *redis_args]) == 2
        assert "has no dimension 'pixels'; it has tokens, calls" in capsys.readouterr().err


@pytest.mark.redis
class TestMetricsWithRedis:
    def test_a_port_in_use_is_one_line_and_exit_1(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str]
    ) -> None:
        """metrics on a port something already listens on: exit 1, one line."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            assert main(["metrics", "--port", port, *redis_args]) == 1
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"aiobudget: error: cannot listen on 127.0.0.1 port {port}: ")


@pytest.mark.redis
class TestRepair:
    def test_a_budget_whose_leases_vanished(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
        stored: str,
    ) -> None:
        """show refuses a damaged budget in one line (1); repair --yes recounts what is
        reserved and keeps spent; a second repair has nothing to do."""
        _edit(redis_url, f"{redis_prefix}:{{tenant-7}}:s", reserved="4,0")
        assert main(["show", stored, *redis_args]) == 1
        err = capsys.readouterr().err
        assert "is damaged in Redis: tokens 4 is reserved but no lease holds it" in err
        assert "Traceback" not in err
        assert main(["repair", stored, "--yes", "--json", *redis_args]) == 0
        result = json.loads(capsys.readouterr().out)
        assert ["reserved was recounted from the 0 leases held: 4,0 -> 0,0"] == result["changes"]
        tokens = result["after"]["dims"]["tokens"]
        assert (1_200, 0) == (tokens["spent"], tokens["reserved"])
        assert main(["repair", stored, "--yes", *redis_args]) == 0
        assert "budget 'tenant-7': nothing to repair" in capsys.readouterr().out

    def test_a_lost_record_needs_its_limits(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
        stored: str,
    ) -> None:
        """The state deleted while a reservation is held: repair says it needs the limits
        (1, nothing changed), then with --limit creates the record again, spent 0 and the
        held reservation counted."""
        import redis

        _hold(
            redis_url,
            redis_prefix,
            stored,
            STORED,
            tokens=100,
        )
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(f"{redis_prefix}:{{tenant-7}}:s")
        finally:
            client.close()
        assert main(["show", stored, *redis_args]) == 1
        assert "counters vanished while reservations were held" in capsys.readouterr().err
        assert main(["repair", stored, "--yes", *redis_args]) == 1
        assert "--limit DIM=VALUE" in capsys.readouterr().err
        argv = ["repair", stored, "--limit", "tokens=10,000", "--limit", "calls=50", "--yes"]
        assert main([*argv, *redis_args]) == 0
        out = capsys.readouterr().out
        assert "created again with limits tokens=10000//0,calls=50//0" in out
        assert re.search(r"tokens\s+10,000\s+-\s+0\s+0\s+100\s+9,900", out)

    def test_unreadable_limits_are_one_line(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        redis_prefix: str,
        redis_args: list[str],
        stored: str,
    ) -> None:
        """Limits edited into something unreadable: show fails (1) with one line naming
        the budget, never a traceback."""
        _edit(redis_url, f"{redis_prefix}:{{tenant-7}}:s", spec="tokens=10000")
        assert main(["show", stored, *redis_args]) == 1
        err = capsys.readouterr().err
        assert "budget 'tenant-7' is damaged in Redis" in err
        assert "Traceback" not in err
        assert 1 == len(err.strip().splitlines())

    def test_an_unknown_budget(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str]
    ) -> None:
        """Repairing a name nobody uses creates nothing and fails (1)."""
        assert main(["repair", "nobody", "--limit", "calls=5", "--yes", *redis_args]) == 1
        assert "no budget named 'nobody'" in capsys.readouterr().err


@pytest.mark.redis
class TestDemoWithRedis:
    def test_demo_across_processes(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str]
    ) -> None:
        """Two worker processes share one budget through Redis and do not overspend it."""
        argv = [*SMALL, "--tokens", "20000", "--processes", "2", "--json", *redis_args]
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)
        _assert_sound(report)
        assert (report["store"], report["processes"]) == ("redis", 2)
        assert report["agents_completed"] + report["agents_denied"] == 8

    def test_demo_that_renews_across_processes(
        self, capsys: pytest.CaptureFixture[str], redis_args: list[str]
    ) -> None:
        """With --period, each window is closed by one process only, and the windows add up
        to what the agents of every process recorded."""
        argv = [*SMALL, "--latency", "0.05", "--period", "0.2", "--processes", "2", "--json"]
        assert main([*argv, *redis_args]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is True
        starts = [_parse(w["start"]) for w in report["windows"]]
        assert len(starts) >= 2
        assert starts == sorted(set(starts))
        for dim, d in report["dims"].items():
            assert d["charged_total"] == sum(w["spent"][dim] for w in report["windows"])
