"""What the agent-framework adapters share: one model call, metered against a budget.

A framework calls an adapter *before* a model call and *after* it (or wraps the call).
`Meter` does the work for every adapter: it resolves the budget for the call, estimates
the call (`estimate_call`, or the user's ``estimate=``), prices the estimate, reserves it
(raising `BudgetExhausted` when it does not fit, so the call is never sent), and settles
the usage the framework reports, with the framework's own cost figure when it has one.
The adapters only translate their framework's objects into a `ModelCall` and a `Usage`.
No framework is imported here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, final

import anyio

from ._budget import Budget
from ._errors import ReservationClosed
from ._pricing import Pricing
from ._units import COST, INPUT_TOKENS, OUTPUT_TOKENS, TOKENS, Usage, usd
from .kernel import check_amount, check_dim

if TYPE_CHECKING:
    from ._reservation import OnUnrecorded, Reservation

__all__ = [
    "BudgetSource",
    "Estimator",
    "Meter",
    "ModelCall",
    "Options",
    "estimate_call",
    "token_usage",
]

BudgetSource = Budget | Callable[[Any], Budget | Awaitable[Budget]]
"""A budget, or a callable of the framework's context for a call returning one."""

CHARS_PER_TOKEN: Final = 4
MESSAGE_TOKENS: Final = 4
"""Tokens a chat format adds per message (role, separators): a rough, common figure."""
_MAX_DEPTH: Final = 24


@final
@dataclasses.dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call about to be sent, as an estimate sees it.

    *messages* and *tools* are the framework's own objects (its message and tool types);
    *max_tokens* is the output bound the call sets (or the adapter's
    ``max_output_tokens``), ``None`` when there is none; *context* is what a callable
    budget receives (each adapter says what it is).
    """

    messages: object
    max_tokens: int | None = None
    model: str | None = None
    tools: object = None
    context: object = None


Estimator = Callable[[ModelCall], Usage]
"""Estimates what a model call can use, before pricing: ``estimate=`` of every adapter."""


def _chars(obj: object, depth: int, seen: set[int]) -> int:
    """Characters of text anywhere in *obj*: strings in mappings (keys too: a tool's
    JSON schema is sent as text), sequences, dataclasses and objects' attributes."""
    if isinstance(obj, str):
        return len(obj)
    if depth > _MAX_DEPTH or obj is None or isinstance(obj, bytes | bytearray | int | float):
        return 0  # images and files are not text this estimate can count
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, Mapping):
        return sum(_chars(k, depth + 1, seen) + _chars(v, depth + 1, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | frozenset):
        return sum(_chars(item, depth + 1, seen) for item in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = dataclasses.fields(obj)
        return sum(_chars(getattr(obj, f.name, None), depth + 1, seen) for f in fields)
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        return sum(
            _chars(value, depth + 1, seen)
            for name, value in attributes.items()
            if not name.startswith("_")
        )
    return 0


def estimate_call(call: ModelCall) -> Usage:
    """The default estimate: the prompt and tools as input tokens, ``max_tokens`` as output.

    Input is every string in the messages and tool definitions, at 4 characters a token
    rounded up, plus 4 tokens a message; images and files count 0. That is a rough
    figure, not an upper bound (text in some languages takes a token every character or
    two): pass ``estimate=`` where the budget must hold in every case. Output is
    ``call.max_tokens``, 0 when it is ``None`` (the adapter refuses that when the
    budget counts output).
    """
    messages = call.messages
    count = len(messages) if isinstance(messages, list | tuple) else 1
    chars = _chars(messages, 0, set()) + _chars(call.tools, 0, set())
    return Usage(
        input_tokens=-(-chars // CHARS_PER_TOKEN) + MESSAGE_TOKENS * count,
        output_tokens=call.max_tokens or 0,
    )


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """The options every adapter takes as keywords.

    - ``estimate``: a callable of a `ModelCall` returning a `Usage` (before pricing);
      `estimate_call` by default.
    - ``pricing``: a `Pricing` that turns tokens into ``cost_micros``: for the estimate,
      and for the actual usage when the framework reports no cost of its own.
    - ``max_output_tokens``: the output bound of a call whose settings set no
      ``max_tokens``. Without either, a budget that counts output tokens or cost refuses
      the call with `ValueError`: a reservation must bound what the call can use.
    - ``calls``: what each model call counts in a ``calls`` dimension (1).
    - ``tool_calls``: the name of a dimension that counts tool calls, one reserved
      before each tool runs (where the framework lets the adapter see tools); ``None``.
    - ``timeout``: seconds to wait for budget before a call (as `Budget.reserve`);
      ``None`` refuses at once.
    - ``on_unrecorded``: ``"refund"`` (default) or ``"charge"``: what a call that failed,
      was abandoned, or reported no usage charges when nothing of its usage is known.
    - ``ttl``: seconds after which a call's reservation is refunded by the store if the
      framework never reported its end (``None``: only the store's own lease time).
    """

    estimate: Estimator | None = None
    pricing: Pricing | None = None
    max_output_tokens: int | None = None
    calls: int = 1
    tool_calls: str | None = None
    timeout: float | None = None
    on_unrecorded: OnUnrecorded = "refund"
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.estimate is not None and not callable(self.estimate):
            raise TypeError(f"estimate must be a callable, not {self.estimate!r}")
        if self.pricing is not None and not isinstance(self.pricing, Pricing):
            raise TypeError(f"pricing must be a Pricing, not {self.pricing!r}")
        if self.max_output_tokens is not None:
            check_amount(self.max_output_tokens, "max_output_tokens")
        check_amount(self.calls, "calls")
        if self.tool_calls is not None:
            check_dim(self.tool_calls)
        if self.timeout is not None and not _seconds(self.timeout, positive=False):
            raise ValueError(
                f"timeout must be a non-negative number of seconds, not {self.timeout!r}"
            )
        if self.ttl is not None and not (_seconds(self.ttl, positive=True) and self.ttl < math.inf):
            raise ValueError(f"ttl must be a finite, positive number of seconds, not {self.ttl!r}")
        if self.on_unrecorded not in ("refund", "charge"):
            raise ValueError(
                f"on_unrecorded must be 'refund' or 'charge', not {self.on_unrecorded!r}"
            )


def token_usage(
    input_tokens: object,
    output_tokens: object,
    *,
    cache_read: object = 0,
    cache_write: object = 0,
    cache_write_1h: object = 0,
    reasoning: object = 0,
) -> Usage:
    """A framework's token counts as a `Usage` (``None`` counts 0). Cache and reasoning
    tokens are parts of the input and output; a part a framework reports above its
    total (never seen, but not ours to trust) is cut to it, so the totals decide."""
    total_in = check_amount(input_tokens or 0, INPUT_TOKENS)
    total_out = check_amount(output_tokens or 0, OUTPUT_TOKENS)
    read = min(check_amount(cache_read or 0, "cache_read_tokens"), total_in)
    write = min(check_amount(cache_write or 0, "cache_write_tokens"), total_in - read)
    return Usage(
        input_tokens=total_in,
        output_tokens=total_out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=min(
            check_amount(cache_write_1h or 0, "cache_write_1h_tokens"), write
        ),
        reasoning_tokens=min(check_amount(reasoning or 0, "reasoning_tokens"), total_out),
    )


def _seconds(value: object, *, positive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 if positive else value >= 0


def _cost_micros(cost: object) -> int:
    """A framework's cost figure (USD as ``Decimal``, ``float`` or ``str``) in micro-units."""
    if isinstance(cost, Decimal | float | int | str):
        return usd(cost)
    raise TypeError(f"a reported cost is a number of US dollars, not {cost!r}")


@final
class Meter:
    """Meters model calls against a budget: the whole of what an adapter does.

    ``Meter(budget, options)``; `before` reserves a call's estimate and returns the
    entered `Reservation`; `after` settles it with what the framework reported.
    """

    __slots__ = ("_budget", "options")

    def __init__(self, budget: BudgetSource, options: Options) -> None:
        if not isinstance(budget, Budget) and not callable(budget):
            raise TypeError(f"budget must be a Budget or a callable returning one, not {budget!r}")
        self._budget = budget
        self.options = options

    def __repr__(self) -> str:
        return f"<Meter budget={self._budget!r}>"

    async def budget(self, context: object) -> Budget:
        """The budget for a call: the one given, or what the callable returns for *context*."""
        source = self._budget
        if isinstance(source, Budget):
            return source
        result = source(context)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Budget):
            raise TypeError(f"the budget callable returned {result!r}, not a Budget")
        return result

    # -- a model call ----------------------------------------------------------------

    def estimate(self, budget: Budget, call: ModelCall) -> Usage:
        """What *call* reserves on *budget*: the estimate, priced, plus the call itself."""
        options = self.options
        if call.max_tokens is None and options.max_output_tokens is not None:
            call = dataclasses.replace(call, max_tokens=options.max_output_tokens)
        if options.estimate is not None:
            usage = options.estimate(call)
            if not isinstance(usage, Usage):
                raise TypeError(f"an estimate must return a Usage, not {usage!r}")
        else:
            dims = budget.dims
            if call.max_tokens is None and any(d in dims for d in (TOKENS, OUTPUT_TOKENS, COST)):
                raise ValueError(
                    f"cannot bound the output of a call to {call.model or 'the model'}: set "
                    "max_tokens in the model settings, or give the adapter max_output_tokens= "
                    "or estimate="
                )
            usage = estimate_call(call)
        if options.pricing is not None:
            usage = options.pricing.priced(usage)
        elif COST in budget.dims and usage.cost_micros == 0:
            raise ValueError(
                f"budget {budget.name!r} counts {COST} but nothing prices this call before it "
                "is sent: give the adapter pricing= (or an estimate= that sets cost_micros)"
            )
        return usage + Usage(calls=options.calls)

    def actual(self, usage: Usage, cost: object = None) -> Usage:
        """What a call that reported *usage* charges: the framework's *cost* (US dollars)
        when it has one, else the priced usage (with ``pricing=``); plus the call."""
        if cost is not None:
            usage = dataclasses.replace(usage, cost_micros=_cost_micros(cost))
        elif self.options.pricing is not None:
            usage = self.options.pricing.priced(usage)
        return usage + Usage(calls=self.options.calls)

    async def before(self, call: ModelCall) -> Reservation:
        """Reserve *call*'s estimate on its budget: an entered reservation, or
        `BudgetExhausted` (the call must not be sent)."""
        budget = await self.budget(call.context)
        return await hold(budget, self.estimate(budget, call), self.options)

    async def after(
        self, held: Reservation, actual: Usage | Callable[[], Usage | None] | None
    ) -> None:
        """Settle *held* with *actual* (from `actual`), or, with ``None`` (nothing known:
        a failure, an abandoned stream, a response without usage), per ``on_unrecorded``.

        *actual* may be a callable computing it: should that raise (a usage the pricing
        cannot price), the reservation is still closed, per ``on_unrecorded``, before the
        error propagates. Shielded from cancellation. When the reservation is gone already
        (its time to live passed before the framework reported), the usage is charged
        directly: spend that happened is recorded.
        """
        with anyio.CancelScope(shield=True):
            if callable(actual):
                try:
                    actual = actual()
                except BaseException:
                    if held.held:
                        await held.commit()
                    raise
            try:
                if actual is not None:
                    if not held.held:
                        raise ReservationClosed("the reservation closed before its usage came")
                    held.record(actual)
                await held.commit()
            except ReservationClosed:
                if actual is not None:
                    await held.budget.charge(actual)

    # -- a tool call -------------------------------------------------------------------

    async def tool(self, context: object) -> None:
        """Count one tool call in the ``tool_calls`` dimension, if one is named: reserved
        before the tool runs (`BudgetExhausted` when it does not fit) and charged at once."""
        dim = self.options.tool_calls
        if dim is None:
            return
        budget = await self.budget(context)
        held = await hold(budget, {dim: 1}, self.options, ttl=False)
        held.record({dim: 1})
        with anyio.CancelScope(shield=True):
            await held.commit()


async def hold(
    budget: Budget, amounts: Usage | Mapping[str, int], options: Options, *, ttl: bool = True
) -> Reservation:
    """Reserve *amounts*: an entered reservation, closed by ``commit``/``release``; the
    one place the adapters enter a reservation. With *ttl* (and ``options.ttl``), the
    store refunds it by itself if it is still open after that many seconds."""
    return await budget.acquire(
        amounts,
        timeout=options.timeout,
        on_unrecorded=options.on_unrecorded,
        ttl=options.ttl if ttl else None,
    )
