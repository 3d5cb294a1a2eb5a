"""aiobudget: share finite budgets (tokens, money, calls, any unit) between async tasks.

    budget = Budget({TOKENS: Limit(100_000, warn=80_000), COST: usd("5"), CALLS: 50})
    async with budget.reserve(tokens=4_000, cost_micros=usd("0.02"), calls=1) as r:
        reply = await llm(...)
        r.record(Usage.from_openai(reply.usage))

Exact (integers, never floats), concurrency-proof (no interleaving overspends), and
cancellation-proof (a cancelled task's reservation is refunded exactly once).
"""

from ._budget import Budget as Budget
from ._errors import BackendError as BackendError
from ._errors import BudgetError as BudgetError
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import BudgetExhausted as BudgetExhausted
from ._errors import InvalidAmount as InvalidAmount
from ._errors import InvalidLimits as InvalidLimits
from ._errors import LimitsMismatch as LimitsMismatch
from ._errors import RequestLimitExceeded as RequestLimitExceeded
from ._errors import ReservationClosed as ReservationClosed
from ._errors import UnknownDimension as UnknownDimension
from ._period import Period as Period
from ._pricing import Pricing as Pricing
from ._reservation import Reservation as Reservation
from ._seeds import TokenPool as TokenPool
from ._seeds import UnitBudget as UnitBudget
from ._units import CALLS as CALLS
from ._units import COST as COST
from ._units import INPUT_TOKENS as INPUT_TOKENS
from ._units import MILLIS as MILLIS
from ._units import OUTPUT_TOKENS as OUTPUT_TOKENS
from ._units import TOKENS as TOKENS
from ._units import Usage as Usage
from ._units import money as money
from ._units import usd as usd
from ._version import __version__ as __version__
from .kernel import Limit as Limit
from .kernel import Snapshot as Snapshot
from .kernel import Status as Status
from .kernel import Verdict as Verdict
from .protocols import BudgetGuard as BudgetGuard
from .protocols import Store as Store
from .protocols import TokenBudget as TokenBudget
from .protocols import TokenReservation as TokenReservation
from .stores.memory import MemoryStore as MemoryStore
from .stores.redis import RedisStore as RedisStore  # imports redis-py only when used

__all__ = [
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

# Tracebacks and reprs say aiobudget.X, not aiobudget._errors.X: the private module
# layout is not part of the contract.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
