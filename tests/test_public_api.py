"""The public surface of `aiobudget`, pinned: adding or removing a name is a decision
made here, on purpose, not a side effect of a refactoring."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys

import pytest

import aiobudget

EXPECTED = [
    "BackendError",
    "Budget",
    "BudgetError",
    "BudgetExceeded",
    "BudgetExhausted",
    "BudgetGuard",
    "CALLS",
    "COST",
    "INPUT_TOKENS",
    "InvalidAmount",
    "InvalidLimits",
    "Limit",
    "LimitsMismatch",
    "MILLIS",
    "MemoryStore",
    "OUTPUT_TOKENS",
    "Period",
    "Pricing",
    "RedisStore",
    "RequestLimitExceeded",
    "Reservation",
    "ReservationClosed",
    "Snapshot",
    "Status",
    "Store",
    "TOKENS",
    "TokenBudget",
    "TokenPool",
    "TokenReservation",
    "UnitBudget",
    "UnknownDimension",
    "Usage",
    "Verdict",
    "money",
    "usd",
]
"""Every name `aiobudget` exports. Extend it when the API grows; never by accident."""

ERRORS = [
    "BackendError",
    "BudgetError",
    "BudgetExceeded",
    "BudgetExhausted",
    "InvalidAmount",
    "InvalidLimits",
    "LimitsMismatch",
    "RequestLimitExceeded",
    "ReservationClosed",
    "UnknownDimension",
]

SUBMODULES = [
    "aiobudget.kernel",
    "aiobudget.testing",
    "aiobudget.fastapi",
    "aiobudget.aiohttp",
    "aiobudget.metrics",
]
"""The public submodules SPEC names (fastapi and aiohttp need their extras)."""

OPTIONAL = [
    "redis",
    "fastapi",
    "starlette",
    "aiohttp",
    "pydantic_ai",
    "agents",
    "langchain_core",
    "litellm",
    "prometheus_client",
    "opentelemetry",
]
"""Extras that ``import aiobudget`` must never import."""


class TestAll:
    def test_is_sorted(self) -> None:
        """__all__ is in plain sorted() order."""
        assert sorted(aiobudget.__all__) == aiobudget.__all__

    def test_has_no_duplicates(self) -> None:
        """No name is exported twice."""
        assert len(set(aiobudget.__all__)) == len(aiobudget.__all__)

    def test_is_the_expected_set(self) -> None:
        """__all__ is exactly the pinned list of names."""
        assert sorted(EXPECTED) == sorted(aiobudget.__all__)

    @pytest.mark.parametrize("name", EXPECTED)
    def test_every_name_is_importable(self, name: str) -> None:
        """Every exported name can be imported from aiobudget itself."""
        namespace: dict[str, object] = {}
        exec(f"from aiobudget import {name}", namespace)  # noqa: S102 - a fixed name
        assert getattr(aiobudget, name) is namespace[name]

    @pytest.mark.parametrize(
        "name", [name for name in EXPECTED if isinstance(getattr(aiobudget, name, None), type)]
    )
    def test_classes_say_aiobudget(self, name: str) -> None:
        """Every public class reports module aiobudget, not its private module."""
        assert "aiobudget" == getattr(aiobudget, name).__module__

    def test_version(self) -> None:
        """__version__ is a non-empty string."""
        assert isinstance(aiobudget.__version__, str)
        assert aiobudget.__version__


class TestErrors:
    @pytest.mark.parametrize("name", ERRORS)
    def test_every_error_is_a_budget_error(self, name: str) -> None:
        """Catching BudgetError catches every error aiobudget raises."""
        assert issubclass(getattr(aiobudget, name), aiobudget.BudgetError)

    def test_every_exported_exception_is_listed(self) -> None:
        """ERRORS lists every exception class aiobudget exports."""
        exported = [
            name
            for name in aiobudget.__all__
            if isinstance(getattr(aiobudget, name), type)
            and issubclass(getattr(aiobudget, name), BaseException)
        ]
        assert ERRORS == exported

    def test_root(self) -> None:
        """BudgetError is an Exception, not a BaseException only."""
        assert issubclass(aiobudget.BudgetError, Exception)

    @pytest.mark.parametrize("name", ["InvalidAmount", "InvalidLimits"])
    def test_value_errors(self, name: str) -> None:
        """Bad amounts and bad limits are ValueErrors too."""
        assert issubclass(getattr(aiobudget, name), ValueError)

    def test_unknown_dimension_is_a_key_error(self) -> None:
        """An unknown dimension is a KeyError too."""
        assert issubclass(aiobudget.UnknownDimension, KeyError)

    def test_request_limit_is_a_denial(self) -> None:
        """A reservation above its per-request cap is a kind of BudgetExhausted."""
        assert issubclass(aiobudget.RequestLimitExceeded, aiobudget.BudgetExhausted)


class TestDimensions:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("TOKENS", "tokens"),
            ("INPUT_TOKENS", "input_tokens"),
            ("OUTPUT_TOKENS", "output_tokens"),
            ("COST", "cost_micros"),
            ("CALLS", "calls"),
            ("MILLIS", "millis"),
        ],
    )
    def test_constants(self, name: str, value: str) -> None:
        """The standard dimension names are the strings SPEC gives."""
        assert value == getattr(aiobudget, name)


class TestPackage:
    def test_import_does_not_import_optional_extras(self) -> None:
        """``import aiobudget`` loads none of redis, fastapi, starlette, aiohttp."""
        code = (
            "import aiobudget, json, sys; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r})))"
        )
        result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert [] == json.loads(result.stdout)

    @pytest.mark.parametrize(
        ("module", "framework"),
        [
            ("aiobudget.pydantic_ai", "pydantic_ai"),
            ("aiobudget.openai_agents", "agents"),
            ("aiobudget.langchain", "langchain_core"),
            ("aiobudget.litellm", "litellm"),
        ],
    )
    def test_an_adapter_imports_its_own_framework_only(self, module: str, framework: str) -> None:
        """Importing a framework adapter imports that framework (its extra), and none of
        the other three."""
        pytest.importorskip(framework)
        frameworks = ["pydantic_ai", "agents", "langchain_core", "litellm"]
        code = (
            f"import os, json, sys; os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'; "
            f"import {module}; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            f"{set(frameworks)!r})))"
        )
        result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert [framework] == json.loads(result.stdout.splitlines()[-1])

    def test_py_typed(self) -> None:
        """The package ships the py.typed marker, so type checkers read its hints."""
        assert importlib.resources.files("aiobudget").joinpath("py.typed").is_file()

    @pytest.mark.parametrize("module", SUBMODULES)
    def test_public_submodules(self, module: str) -> None:
        """The public submodules import."""
        assert module == importlib.import_module(module).__name__
