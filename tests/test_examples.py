"""Every script in examples/ runs and exits 0: documentation that cannot drift.

New examples are picked up by themselves. One that needs more than aiobudget says so in
a comment among its first lines, ``# requires: redis`` (a running Redis: the test passes
its URL as ``AIOBUDGET_REDIS_URL`` and a key prefix of its own as
``AIOBUDGET_REDIS_PREFIX``) or ``# requires: fastapi, httpx`` (importable packages);
without them the example is skipped, not failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
HEADER_LINES = 15  # where a "# requires:" comment is looked for


def requirements(path: Path) -> list[str]:
    """The names listed by ``# requires: a, b`` comments near the top of *path*."""
    names: list[str] = []
    with path.open(encoding="utf-8") as file:
        for _, line in zip(range(HEADER_LINES), file):
            text = line.strip()
            if text.startswith("# requires:"):
                names += [n.strip() for n in text.removeprefix("# requires:").split(",")]
    return [name for name in names if name]


def test_examples_exist() -> None:
    """The examples folder is not empty (a wrong path would make the test below vacuous)."""
    assert EXAMPLES


def test_requirements_are_read_from_the_header(tmp_path: Path) -> None:
    """``# requires:`` lines near the top are read; commas separate names."""
    script = tmp_path / "x.py"
    script.write_text('"""Doc."""\n# requires: redis\n# requires: fastapi, httpx\nprint(1)\n')
    assert requirements(script) == ["redis", "fastapi", "httpx"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(path: Path, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The example exits 0 within the time limit and prints something."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    for name in requirements(path):
        if name == "redis":
            pytest.importorskip("redis")
            env["AIOBUDGET_REDIS_URL"] = request.getfixturevalue("redis_url")
            env["AIOBUDGET_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
        else:
            pytest.importorskip(name)
    result = subprocess.run(  # noqa: S603 - our interpreter running our own examples
        [sys.executable, str(path)],
        cwd=tmp_path,  # an example must not depend on, or litter, the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.strip()
