"""Every runnable code block of the documentation and the README runs: docs that cannot drift.

A fenced block is *runnable* when the line before its opening fence (blank lines aside)
is an HTML comment, which MkDocs passes through without showing it:

- ``<!-- runnable -->``: the block needs aiobudget alone. It runs on asyncio, on asyncio
  with uvloop and on trio.
- ``<!-- runnable: fastapi, httpx -->``: it also imports these packages; without them
  it is skipped. It runs on asyncio.
- ``<!-- runnable: openai -->`` (or ``anthropic``): ``AsyncOpenAI()`` and
  ``AsyncAnthropic()`` built in the block answer from a mock of the provider's HTTP API
  with fixed usage (``tests/integrations/_llm_api.py``). It runs on asyncio.
- ``<!-- runnable: redis -->``: it needs a running Redis (the ``redis_url`` fixture).
  ``redis://localhost:6379/0`` in the block means the test's Redis, and every
  `RedisStore` it builds gets a key prefix of the test's own, deleted afterwards. It
  runs on asyncio.

Each block runs alone, in a fresh namespace, as if pasted into ``python -m asyncio``:
top-level ``await`` is allowed. A block without one runs as a script, with
``__name__ == "__main__"``, so a complete program (``anyio.run(main)``) runs itself.
Blocks never reach the network; a model is always simulated.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
LOCAL_REDIS = "redis://localhost:6379/0"  # what a block writes; replaced by the test Redis
MAX_COLUMNS = 84

_MARKER = re.compile(r"^\s*<!--\s*runnable(?::\s*(?P<needs>[\w\-, ]*))?\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")

# (test id, anyio backend, backend options), as in conftest.py's anyio_backend fixture
_BACKENDS: list[tuple[str, str, dict[str, Any]]] = [("asyncio", "asyncio", {})]
if sys.implementation.name == "cpython" and sys.platform != "win32":
    import uvloop

    _BACKENDS.append(("uvloop", "asyncio", {"loop_factory": uvloop.new_event_loop}))
_BACKENDS.append(("trio", "trio", {}))


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    path: Path
    line: int  # of the first line of code, counted from 1
    info: str  # what follows the opening fence: "python", 'python title="x"', ...
    code: str
    runnable: bool
    needs: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of the Markdown file *path*, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        marker = _marker_before(lines, i)
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        needs = ()
        if marker is not None and marker["needs"]:
            needs = tuple(n.strip() for n in marker["needs"].split(",") if n.strip())
        found.append(
            Block(path, i + 2, opening["info"].strip(), code + "\n", marker is not None, needs)
        )
        i = end + 1
    return found


def _marker_before(lines: list[str], fence: int) -> re.Match[str] | None:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return _MARKER.match(lines[j]) if j >= 0 else None


ALL_BLOCKS = [block for path in PAGES for block in blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runnable]


def _params() -> list[Any]:
    """One test per block and backend: blocks with requirements, and scripts (which
    choose their own event loop), run once, on asyncio."""
    params = []
    for block in RUNNABLE:
        if block.needs or not _awaits(block):
            params.append(pytest.param(block, _BACKENDS[0], id=block.name))
            continue
        params.extend(
            pytest.param(block, backend, id=f"{block.name}-{backend[0]}") for backend in _BACKENDS
        )
    return params


def _compile(block: Block, source: str | None = None) -> Any:
    # Blank lines first, so that a traceback names the line of the Markdown file.
    text = "\n" * (block.line - 1) + (block.code if source is None else source)
    return compile(
        text,
        str(block.path),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,  # not this module's `from __future__ import annotations`
    )


def _awaits(block: Block) -> bool:
    """True when the block has top-level ``await`` (so it is run on an event loop)."""
    try:
        return bool(_compile(block).co_flags & inspect.CO_COROUTINE)
    except SyntaxError:
        return False  # reported by its test, not at collection


class TestTheMarker:
    def test_pages_have_runnable_blocks(self) -> None:
        """The pages are found and hold runnable blocks (a wrong path or marker would
        make the test below vacuous)."""
        pages = {block.path.relative_to(ROOT).as_posix() for block in RUNNABLE}
        assert {"docs/getting-started.md", "docs/concepts.md", "docs/index.md"} <= pages
        assert len(RUNNABLE) >= 20

    def test_every_marker_marks_a_python_block(self) -> None:
        """A marker is followed by a Python code block, not by prose."""
        for path in PAGES:
            lines = path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines):
                if not _MARKER.match(line):
                    continue
                following = next((text for text in lines[number + 1 :] if text.strip()), "")
                opening = _FENCE.match(following)
                where = f"{path.relative_to(ROOT)}:{number + 1}"
                assert opening is not None, f"{where}: a runnable marker without a code block"
                assert opening["info"].split()[0] in {"python", "py"}, where

    def test_markers_are_read(self, tmp_path: Path) -> None:
        """A marker, its requirements and an indented block (in an admonition) are read."""
        page = tmp_path / "page.md"
        page.write_text(
            "Text.\n\n<!-- runnable -->\n\n```python\nx = 1\n```\n\n"
            '!!! note\n\n    <!-- runnable: redis, httpx -->\n    ```python title="t"\n'
            "    y = 2\n    ```\n\n```sh\nls\n```\n",
            encoding="utf-8",
        )
        found = blocks(page)
        assert [(True, ()), (True, ("redis", "httpx")), (False, ())] == [
            (block.runnable, block.needs) for block in found
        ]
        assert ["x = 1\n", "y = 2\n", "ls\n"] == [block.code for block in found]
        assert [6, 13, 17] == [block.line for block in found]


@pytest.mark.parametrize(("block", "backend"), _params())
def test_block_runs(
    block: Block,
    backend: tuple[str, str, dict[str, Any]],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The block runs to the end without an error."""
    source = block.code
    for name in block.needs:
        if name == "redis":
            pytest.importorskip("redis")
            url = request.getfixturevalue("redis_url")
            _prefix_redis_keys(monkeypatch, request.getfixturevalue("redis_prefix"))
            source = source.replace(LOCAL_REDIS, url)
        elif name in ("openai", "anthropic"):
            # The SDK's client is built as a user would; its HTTP goes to a mock API.
            from tests.integrations._llm_api import AutoAPI, patch_clients

            patch_clients(monkeypatch, AutoAPI())
        else:
            pytest.importorskip(name)
    code = _compile(block, source)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    saved = structlog.get_config() if structlog.is_configured() else None
    try:
        if code.co_flags & inspect.CO_COROUTINE:

            async def run() -> None:
                await eval(code, namespace)  # noqa: S307 - our own documentation's code

            anyio.run(run, backend=backend[1], backend_options=backend[2])
        else:
            exec(code, namespace)  # noqa: S102 - our own documentation's code
    finally:
        # A block may configure structlog as an application would: undo it.
        if saved is None:
            structlog.reset_defaults()
        else:
            structlog.configure(**saved)


def _prefix_redis_keys(monkeypatch: pytest.MonkeyPatch, test_prefix: str) -> None:
    """Make every RedisStore the block builds put its keys under *test_prefix*."""
    from aiobudget.stores.redis import RedisStore

    original = RedisStore.__init__

    def init(self: RedisStore, client_or_url: Any, *, prefix: str = "aiobudget", **kw: Any) -> None:
        original(self, client_or_url, prefix=f"{test_prefix}-{prefix}", **kw)

    monkeypatch.setattr(RedisStore, "__init__", init)


def test_code_fits_the_page() -> None:
    """Code blocks of the site are at most 84 columns wide: they fit the page on a
    1280-pixel screen without a scroll bar (docs/stylesheets/extra.css)."""
    docs = ROOT / "docs"
    wide = [
        f"{block.path.relative_to(ROOT)}:{block.line + number}"
        for block in ALL_BLOCKS
        if block.path.is_relative_to(docs)
        for number, line in enumerate(block.code.splitlines())
        if len(line) > MAX_COLUMNS
    ]
    assert [] == wide
