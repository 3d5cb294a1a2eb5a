"""Private redis-server processes for the tests that kill, restart or cluster them.

Every server binds 127.0.0.1 on a free port, keeps nothing on disk (``--save ""
--appendonly no``) and is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_REDIS = os.environ.get("AIOBUDGET_REQUIRE_REDIS") == "1"


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unavailable(reason: str) -> None:
    """Skip, or fail when the CI asks for every Redis test to run."""
    if REQUIRE_REDIS:
        pytest.fail(f"AIOBUDGET_REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)


class RedisServer:
    """One redis-server on a fixed loopback port: start, kill (SIGKILL), start again."""

    def __init__(self, *extra: str, port: int | None = None, cwd: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        assert binary is not None
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.extra = extra
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.extra,
        ]
        self.process = subprocess.Popen(  # noqa: S603 - redis-server from PATH, fixed arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, nothing saved."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
