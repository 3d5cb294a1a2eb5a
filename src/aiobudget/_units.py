"""Dimension names, exact money, and `Usage`: what an LLM call (or any work) used.

Money is counted in integer micro-units (``cost_micros``); floats are converted once,
through their shortest ``repr``, and never accumulated, so ten times ``usd(0.1)`` is
exactly ``usd(1)``. A fraction below one micro-unit rounds *up*: spend is never
undercounted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Final, final

from ._errors import InvalidAmount
from .kernel import MAX_AMOUNT, check_amount, check_dim, saturate

__all__ = [
    "CALLS",
    "COST",
    "INPUT_TOKENS",
    "MILLIS",
    "OUTPUT_TOKENS",
    "TOKENS",
    "Usage",
    "money",
    "usd",
]

TOKENS: Final = "tokens"
INPUT_TOKENS: Final = "input_tokens"
OUTPUT_TOKENS: Final = "output_tokens"
COST: Final = "cost_micros"
CALLS: Final = "calls"
MILLIS: Final = "millis"

MICROS: Final = 1_000_000


MoneyValue = int | Decimal | str | float


def decimal_of(value: object, what: str) -> Decimal:
    """*value* as an exact, finite, non-negative Decimal, or `InvalidAmount`."""
    if isinstance(value, bool):
        raise InvalidAmount(f"{what} {value!r} is a bool, not a number", value=value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAmount(f"{what} {value!r} is not finite", value=value)
        number = Decimal(repr(value))  # the shortest repr: 0.1 means 0.1, not 0.1000000000000000055
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmount(f"{what} {value!r} is not a number", value=value) from None
    else:
        raise InvalidAmount(
            f"{what} {value!r} is a {type(value).__name__}; use an int, Decimal, str or float",
            value=value,
        )
    if not number.is_finite():
        raise InvalidAmount(f"{what} {value!r} is not finite", value=value)
    if number < 0:
        raise InvalidAmount(f"{what} {value!r} is negative", value=value)
    return number


# Exact arithmetic on (mantissa, exponent) pairs: a Decimal context would round a long
# or extreme value before the final round-up, undercounting spend.
MAX_ADJUSTED: Final = 40  # 10**40 of anything is far past 2**63 - 1 units
MIN_EXPONENT: Final = -1000  # prices with more decimal places than this are refused


def decimal_parts(number: Decimal) -> tuple[int, int]:
    """*number* (finite, non-negative) as ``(m, e)`` with ``number == m * 10**e``."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    return int("".join(map(str, digits)) or "0"), exponent


def too_large(what: str, value: object) -> InvalidAmount:
    return InvalidAmount(f"{what} {value!r} is more than 2**63 - 1 units", value=value)


def ceil_div(numerator: int, exponent: int) -> int:
    """``ceil(numerator * 10**exponent)``."""
    power: int = 10 ** abs(exponent)
    if exponent >= 0:
        return numerator * power
    return -(-numerator // power)


def to_units(total: int, what: str, value: object) -> int:
    if total > MAX_AMOUNT:
        raise too_large(what, value)
    return total


def money(value: MoneyValue, *, scale: int = MICROS) -> int:
    """Convert an amount of currency to integer units of ``1/scale``, rounding up.

    ``money("12.5", scale=100)`` is 1250 cents; the default scale is micro-units. Any
    fraction of a unit, however small, counts as a whole unit.
    """
    if type(scale) is not int or not 1 <= scale <= MAX_AMOUNT:
        raise InvalidAmount(f"scale {scale!r} must be an int in 1 .. 2**63 - 1", value=scale)
    number = decimal_of(value, "money value")
    if not number:
        return 0
    if number.adjusted() > MAX_ADJUSTED:
        raise too_large("money value", value)
    if number.adjusted() < -MAX_ADJUSTED:
        return 1  # below 10**-40, times any scale, is a positive fraction of one unit
    mantissa, exponent = decimal_parts(number)
    return to_units(ceil_div(mantissa * scale, exponent), "money value", value)


def usd(value: MoneyValue) -> int:
    """US dollars as integer micro-dollars (``cost_micros``): ``usd("0.02") == 20_000``."""
    return money(value)


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@final
@dataclass(frozen=True, slots=True)
class Usage:
    """What one piece of work used, in the standard dimensions plus ``extra`` ones.

    It maps onto a budget's dimensions: ``tokens`` takes ``input_tokens + output_tokens``;
    ``input_tokens``, ``output_tokens``, ``cost_micros`` and ``calls`` go to the dimensions
    of those names, and ``extra`` to dimensions by name. A standard field goes only where
    the budget has a dimension for it (a calls-only budget can record a full `Usage`);
    an ``extra`` name the budget lacks is an `UnknownDimension` error.

    The LLM breakdown says *which* tokens they were, for pricing; each is a part of a
    total and never counted twice (``tokens`` stays input + output):

    - ``cache_read_tokens`` and ``cache_write_tokens``: input tokens read from, and
      written to, the provider's prompt cache (both included in ``input_tokens``);
    - ``cache_write_1h_tokens``: the part of ``cache_write_tokens`` written with a
      one-hour lifetime (Anthropic bills it above the default five minutes);
    - ``reasoning_tokens``: the part of ``output_tokens`` spent on hidden reasoning.

    A part larger than its total raises `InvalidAmount`. These fields also go to budget
    dimensions of the same names, where a budget has them.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    calls: int = 0
    extra: Mapping[str, int] = field(default_factory=_empty)
    cache_read_tokens: int = field(default=0, kw_only=True)
    cache_write_tokens: int = field(default=0, kw_only=True)
    cache_write_1h_tokens: int = field(default=0, kw_only=True)
    reasoning_tokens: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        check_amount(self.input_tokens, INPUT_TOKENS)
        check_amount(self.output_tokens, OUTPUT_TOKENS)
        check_amount(self.cost_micros, COST)
        check_amount(self.calls, CALLS)
        for name in _PARTS:
            check_amount(getattr(self, name), name)
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise InvalidAmount(
                f"cache_read_tokens ({self.cache_read_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed input_tokens ({self.input_tokens}): "
                "cache tokens are part of the input, so input_tokens must include them",
                value=self,
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise InvalidAmount(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed "
                f"cache_write_tokens ({self.cache_write_tokens}), which include them",
                value=self,
            )
        if self.reasoning_tokens > self.output_tokens:
            raise InvalidAmount(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens "
                f"({self.output_tokens}), which include them",
                value=self,
            )
        if not isinstance(self.extra, Mapping):
            raise InvalidAmount(f"extra must be a mapping, not {self.extra!r}", value=self.extra)
        extra = {}
        for name, value in self.extra.items():
            if check_dim(name) in _STANDARD:
                hint = "input_tokens and output_tokens" if name == TOKENS else f"{name}=..."
                raise InvalidAmount(
                    f"extra is for custom dimensions, not the standard {name!r}: give {hint}",
                    dim=name,
                    value=value,
                )
            extra[name] = check_amount(value, name)
        object.__setattr__(self, "extra", MappingProxyType(extra))

    @property
    def tokens(self) -> int:
        """``input_tokens + output_tokens`` (cache and reasoning tokens are inside them)."""
        return saturate(self.input_tokens + self.output_tokens)

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        extra = dict(self.extra)
        for name, value in other.extra.items():
            extra[name] = saturate(extra.get(name, 0) + value)
        return Usage(
            input_tokens=saturate(self.input_tokens + other.input_tokens),
            output_tokens=saturate(self.output_tokens + other.output_tokens),
            cost_micros=saturate(self.cost_micros + other.cost_micros),
            calls=saturate(self.calls + other.calls),
            extra=extra,
            cache_read_tokens=saturate(self.cache_read_tokens + other.cache_read_tokens),
            cache_write_tokens=saturate(self.cache_write_tokens + other.cache_write_tokens),
            cache_write_1h_tokens=saturate(
                self.cache_write_1h_tokens + other.cache_write_1h_tokens
            ),
            reasoning_tokens=saturate(self.reasoning_tokens + other.reasoning_tokens),
        )

    def amounts(self, dims: Mapping[str, object] | tuple[str, ...]) -> dict[str, int]:
        """The amounts this usage puts on a budget whose dimensions are *dims*."""
        out: dict[str, int] = {}
        if TOKENS in dims:
            out[TOKENS] = self.tokens
        for name in (INPUT_TOKENS, OUTPUT_TOKENS, COST, CALLS, *_PARTS):
            if name in dims:
                out[name] = getattr(self, name)
        for name, value in self.extra.items():
            out[name] = saturate(out.get(name, 0) + value)
        return out

    @classmethod
    def from_openai(cls, obj: object) -> Usage:
        """Read an OpenAI-style response, its ``usage``, or a dict of either.

        Chat Completions: ``prompt_tokens`` (cached ones included, as
        ``prompt_tokens_details.cached_tokens``) and ``completion_tokens`` (reasoning
        included, as ``completion_tokens_details.reasoning_tokens``). Responses API:
        ``input_tokens`` / ``output_tokens`` with ``input_tokens_details`` /
        ``output_tokens_details``. A ``cost`` in the usage (in USD, as OpenRouter
        reports it) becomes ``cost_micros``. Duck-typed: no SDK needed.

        An Anthropic usage has ``input_tokens`` too, but without its cache tokens; it is
        recognised (by ``cache_read_input_tokens`` / ``cache_creation_input_tokens``, or
        a ``"message"`` response) and read with `from_anthropic`, so no reader
        undercounts it.
        """
        usage = _usage_of(obj)
        if _looks_anthropic(obj, usage):
            return cls.from_anthropic(obj)
        prompt = _field(usage, "prompt_tokens")
        completion = _field(usage, "completion_tokens")
        details_in, details_out = "prompt_tokens_details", "completion_tokens_details"
        if prompt is None and completion is None:
            prompt = _field(usage, "input_tokens")
            completion = _field(usage, "output_tokens")
            details_in, details_out = "input_tokens_details", "output_tokens_details"
        if prompt is None and completion is None:
            raise _no_usage(obj)
        prompt, completion = prompt or 0, completion or 0
        cached = _field(field_of(usage, details_in), "cached_tokens") or 0
        reasoning = _field(field_of(usage, details_out), "reasoning_tokens") or 0
        return cls(
            input_tokens=max(prompt, cached),
            output_tokens=max(completion, reasoning),
            cost_micros=_cost(usage),
            cache_read_tokens=cached,
            reasoning_tokens=reasoning,
        )

    @classmethod
    def from_anthropic(cls, obj: object) -> Usage:
        """Read an Anthropic-style message, its ``usage``, or a dict of either.

        Anthropic reports ``input_tokens`` *without* the cache: cache reads
        (``cache_read_input_tokens``) and writes (``cache_creation_input_tokens``, split
        by lifetime in ``cache_creation``) are added to make ``input_tokens`` the whole
        input, and kept as ``cache_read_tokens``, ``cache_write_tokens`` and
        ``cache_write_1h_tokens``. Works on stream events' usage too (counts that are
        ``None`` or absent are 0).
        """
        usage = _usage_of(obj)
        if _field(usage, "input_tokens") is None and _field(usage, "output_tokens") is None:
            raise _no_usage(obj)
        read = _field(usage, "cache_read_input_tokens") or 0
        creation = field_of(usage, "cache_creation")
        write_5m = _field(creation, "ephemeral_5m_input_tokens") or 0
        write_1h = _field(creation, "ephemeral_1h_input_tokens") or 0
        # The total and its split should agree; if not, the larger never undercounts.
        write = max(
            _field(usage, "cache_creation_input_tokens") or 0, saturate(write_5m + write_1h)
        )
        return cls(
            input_tokens=saturate((_field(usage, "input_tokens") or 0) + read + write),
            output_tokens=_field(usage, "output_tokens") or 0,
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=min(write_1h, write),
        )


_PARTS: Final = (
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
_ANTHROPIC_KEYS: Final = (
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
)


# Names `extra` may not use: they would be charged twice, or apart from `Usage.tokens`.
_STANDARD: Final = frozenset({TOKENS, *(f.name for f in fields(Usage) if f.name != "extra")})


def field_of(obj: object, name: str) -> object:
    """``obj[name]`` for a mapping, else ``obj.name``; None when it has no such field
    (how responses of LLM SDKs and their dict forms are read alike)."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _has(obj: object, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    return hasattr(obj, name)


def _looks_anthropic(obj: object, usage: object) -> bool:
    """An Anthropic message or usage: its own cache fields (the SDK has them even when
    they are ``None``), or a response of type ``"message"``."""
    if _field(usage, "prompt_tokens") is not None or _has(usage, "input_tokens_details"):
        return False
    return any(_has(usage, key) for key in _ANTHROPIC_KEYS) or field_of(obj, "type") == "message"


def _cost(usage: object) -> int:
    """A provider-computed ``cost`` (USD) in the usage, as micro-dollars, or 0."""
    cost = field_of(usage, "cost")
    if cost is None:
        return 0
    if isinstance(cost, bool) or not isinstance(cost, int | float | Decimal | str):
        raise InvalidAmount(f"usage cost {cost!r} is not a number", value=cost)
    return usd(cost)


def _usage_of(obj: object) -> object:
    """The ``usage`` part of a response, or *obj* itself when it is the usage."""
    if obj is None:
        raise InvalidAmount("no usage given (None): the response carried no usage", value=obj)
    usage = field_of(obj, "usage")
    return obj if usage is None else usage


def _no_usage(obj: object) -> InvalidAmount:
    # Zeros would silently undercount: say so instead, and let the caller decide.
    return InvalidAmount(f"no token counts found in {type(obj).__name__} {obj!r:.200}", value=obj)


def _field(usage: object, name: str) -> int | None:
    value = field_of(usage, name)
    if value is None:
        return None
    return check_amount(value, name)
