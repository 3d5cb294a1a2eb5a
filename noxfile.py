"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``, ``demo``, ``docs``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml("pyproject.toml")
EXTRAS = ".[redis,fastapi,aiohttp,prometheus,otel]"


def _install_group(session: nox.Session, group: str, *extra: str) -> None:
    session.install(*nox.project.dependency_groups(PYPROJECT, group), *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite on asyncio, asyncio+uvloop and trio, with branch coverage."""
    _install_group(session, "test")
    session.install("-e", EXTRAS)
    session.run("coverage", "erase")
    session.run(
        "pytest",
        "--cov",
        "--cov-report=",
        *session.posargs,
    )
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")
    # The kernel is the contract every store is checked against: every branch is tested.
    session.run("coverage", "report", "--include=*/aiobudget/kernel.py", "--fail-under=100")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    _install_group(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and on the README-style usage in tests/typing."""
    _install_group(session, "typecheck")
    session.install("-e", EXTRAS)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each reported as a ratio to a baseline measured in the same run;
    ``nox -s bench -- --plot`` also draws the scaling curves for the docs."""
    session.install("-e", EXTRAS, "uvloop", "matplotlib")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode: a broken link or reference fails."""
    _install_group(session, "docs")
    session.install("-e", EXTRAS)
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: many simulated agents sharing one budget."""
    session.install("-e", ".")
    session.run("python", "-m", "aiobudget", "demo", *session.posargs)
