"""`Pricing`: what the providers bill for a `Usage`, in exact integer micro-units.

A provider bills input, output, cache-read and cache-write tokens (five-minute and
one-hour writes) at different prices per million tokens, and some bill a whole request
at higher prices once its input passes a threshold (a long-context tier). The cost is
the exact sum of count x price, rounded up once, so it is never below the bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Final, final

from ._errors import InvalidAmount
from ._units import (
    INPUT_TOKENS,
    MAX_ADJUSTED,
    MICROS,
    MIN_EXPONENT,
    OUTPUT_TOKENS,
    MoneyValue,
    Usage,
    ceil_div,
    decimal_of,
    decimal_parts,
    to_units,
    too_large,
)
from .kernel import MAX_AMOUNT, check_amount

__all__ = ["Pricing"]

_PER_MILLION: Final = -6  # prices are per 10**6 tokens


def _price(value: MoneyValue, name: str) -> Decimal:
    price = decimal_of(value, f"{name} price")
    if price and price.adjusted() > MAX_ADJUSTED:
        raise too_large(f"{name} price", value)
    if price and decimal_parts(price)[1] < MIN_EXPONENT:
        raise InvalidAmount(
            f"{name} price {value!r} has more than {-MIN_EXPONENT} decimal places", value=value
        )
    return price


@final
@dataclass(frozen=True, slots=True, init=False)
class Pricing:
    """Prices per million tokens, in currency units, turning a `Usage` into ``cost_micros``.

    ``Pricing(input="3", output="15", cache_read="0.30", cache_write="3.75",
    cache_write_1h="6", long_context=(200_000, Pricing(...)))`` prices a model the way
    its provider bills it:

    - uncached input tokens at *input*, output tokens (reasoning included) at *output*;
    - ``cache_read_tokens`` at *cache_read* (the input price when not given: never
      less than the bill);
    - ``cache_write_tokens`` at *cache_write*, the one-hour part of them
      (``cache_write_1h_tokens``) at *cache_write_1h*. A usage with cache writes and no
      price for them raises `InvalidAmount` rather than guess low;
    - *long_context* ``(threshold, pricing)``: a request whose ``input_tokens`` (cache
      included) exceed *threshold* is priced, whole, by that other `Pricing`.

    Prices are exact decimals (at most 1000 decimal places); the cost is computed
    exactly and rounded up once, at the end, to whole units of ``1/scale`` (micro-units
    by default). `Pricing.for_model` takes the prices of a named model from the
    ``genai-prices`` package (the ``genai-prices`` extra).
    """

    input: Decimal
    output: Decimal
    scale: int
    cache_read: Decimal | None
    cache_write: Decimal | None
    cache_write_1h: Decimal | None
    long_context: tuple[int, Pricing] | None

    def __init__(
        self,
        input: MoneyValue,
        output: MoneyValue,
        *,
        cache_read: MoneyValue | None = None,
        cache_write: MoneyValue | None = None,
        cache_write_1h: MoneyValue | None = None,
        long_context: tuple[int, Pricing] | None = None,
        scale: int = MICROS,
    ) -> None:
        if type(scale) is not int or not 1 <= scale <= MAX_AMOUNT:
            raise InvalidAmount(f"scale {scale!r} must be an int in 1 .. 2**63 - 1", value=scale)
        setattr_ = object.__setattr__
        setattr_(self, "input", _price(input, "input"))
        setattr_(self, "output", _price(output, "output"))
        for name, value in (
            ("cache_read", cache_read),
            ("cache_write", cache_write),
            ("cache_write_1h", cache_write_1h),
        ):
            setattr_(self, name, None if value is None else _price(value, name))
        if long_context is not None:
            if not (
                isinstance(long_context, tuple)
                and len(long_context) == 2
                and isinstance(long_context[1], Pricing)
            ):
                raise TypeError(
                    f"long_context must be a (threshold, Pricing) pair, not {long_context!r}"
                )
            check_amount(long_context[0], "long_context threshold")
            if long_context[1].scale != scale:
                raise InvalidAmount(
                    "a long_context Pricing must have the same scale", value=long_context
                )
        setattr_(self, "long_context", long_context)
        setattr_(self, "scale", scale)

    def for_usage(self, usage: Usage) -> Pricing:
        """The prices that apply to *usage*: a long-context tier when it passes one."""
        pricing = self
        while pricing.long_context is not None and usage.input_tokens > pricing.long_context[0]:
            pricing = pricing.long_context[1]
        return pricing

    def cost(
        self, usage: Usage | None = None, *, input_tokens: int = 0, output_tokens: int = 0
    ) -> int:
        """The cost of *usage* (or of the plain token counts given) in units of ``1/scale``."""
        if usage is None:
            check_amount(input_tokens, INPUT_TOKENS)
            check_amount(output_tokens, OUTPUT_TOKENS)
            usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        elif not isinstance(usage, Usage):
            raise TypeError(f"cost() prices a Usage, not {usage!r}")
        prices = self.for_usage(usage)
        write_1h = usage.cache_write_1h_tokens
        write_5m = usage.cache_write_tokens - write_1h
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        terms = [
            (uncached, prices.input),
            (usage.output_tokens, prices.output),
            (
                usage.cache_read_tokens,
                prices.input if prices.cache_read is None else prices.cache_read,
            ),
            (write_5m, prices._needed(prices.cache_write, "cache_write", write_5m)),
            (write_1h, prices._needed(prices.cache_write_1h, "cache_write_1h", write_1h)),
        ]
        parts = [(count, *decimal_parts(price)) for count, price in terms if count and price]
        if not parts:
            return 0
        low = min(0, *(exponent for _, _, exponent in parts))
        numerator = sum(
            count * mantissa * 10 ** (exponent - low) for count, mantissa, exponent in parts
        )
        numerator *= prices.scale
        return to_units(ceil_div(numerator, low + _PER_MILLION), "cost", numerator)

    def _needed(self, price: Decimal | None, name: str, tokens: int) -> Decimal:
        if price is not None or not tokens:
            return price or Decimal(0)
        raise InvalidAmount(
            f"the usage has {tokens:,} {name.replace('_', '-')} tokens but this Pricing has no "
            f"{name} price: give Pricing(..., {name}=...) rather than let them be priced low",
            value=tokens,
        )

    def priced(self, usage: Usage) -> Usage:
        """*usage* with its cost (in units of ``1/scale``) added to ``cost_micros``."""
        return usage + Usage(cost_micros=self.cost(usage))

    @classmethod
    def for_model(
        cls,
        model: str,
        *,
        provider: str | None = None,
        at: datetime | None = None,
        scale: int = MICROS,
    ) -> Pricing:
        """The prices of *model* (``"claude-sonnet-4-5"``, ``"gpt-4o"``...) from the
        ``genai-prices`` package, which follows the providers' published prices
        (``pip install 'aiobudget[genai-prices]'``; aiobudget keeps no price table).

        Token prices only: input, output, cache read, cache write (five-minute and
        one-hour) and long-context tiers, as they stand *at* (now by default), for the
        standard tier of service. *provider* (``"anthropic"``, ``"openai"``...) picks
        the provider when the name is ambiguous. Raises `LookupError` for a model the
        package does not know.
        """
        try:
            from genai_prices import data_snapshot  # noqa: PLC0415 - an optional extra
        except ImportError as exc:  # pragma: no cover - the extra is a test dependency
            raise ImportError(
                "Pricing.for_model needs the genai-prices package: "
                "pip install 'aiobudget[genai-prices]'"
            ) from exc
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
        prices = info.get_prices(at or datetime.now(tz=timezone.utc))
        return _from_genai(prices, scale)


_GENAI_KEYS: Final = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
}


def _from_genai(prices: Any, scale: int) -> Pricing:
    """A `Pricing` from a genai-prices ``ModelPrice``: tiered prices become nested
    long-context tiers (a tier applies to the whole request above its start)."""
    values = {name: getattr(prices, key, None) for name, key in _GENAI_KEYS.items()}
    if values["cache_write"] is None:  # some models name the five-minute price only
        values["cache_write"] = getattr(prices, "cache_write_5m_mtok", None)
    if values["input"] is None or values["output"] is None:
        raise LookupError(f"genai-prices has no token prices for this model: {prices}")
    starts = sorted(
        {tier.start for value in values.values() for tier in getattr(value, "tiers", ())}
    )

    def at_level(level: int) -> Pricing:
        chosen: dict[str, Decimal | None] = {}
        for name, value in values.items():
            price = getattr(value, "base", value)
            for tier in getattr(value, "tiers", ()):
                if level and tier.start <= starts[level - 1]:
                    price = tier.price
            chosen[name] = price
        above = (starts[level], at_level(level + 1)) if level < len(starts) else None
        input_, output = chosen.pop("input"), chosen.pop("output")
        assert input_ is not None
        assert output is not None
        return Pricing(input_, output, **chosen, long_context=above, scale=scale)

    return at_level(0)
