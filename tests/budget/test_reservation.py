"""`Budget.reserve` and `Reservation`: SPEC "Budget (async)", one rule per test.

Reserve on enter, record what happened, settle once on exit; refunds on every way out;
commit, release, try_reserve, request limits, headroom; a forgotten reservation refunds.
Direct operations (charge, snapshot, reset, new limits) are in ``test_operations.py``,
bad input in ``test_bad_input.py``.
"""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

import gc

import anyio
import pytest
from structlog.testing import capture_logs

from aiobudget import (
    CALLS,
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    TOKENS,
    Budget,
    BudgetExhausted,
    Limit,
    RequestLimitExceeded,
    Reservation,
    ReservationClosed,
    Status,
    Usage,
    Verdict,
)

from ._support import drop, reserved, spent, state

pytestmark = pytest.mark.anyio

CONTINUE = Verdict(Status.CONTINUE)


def llm_budget() -> Budget:
    """A budget over tokens, input and output tokens, cost and calls."""
    return Budget(
        {TOKENS: 1_000, INPUT_TOKENS: 600, OUTPUT_TOKENS: 600, COST: 50_000, CALLS: 10},
        name="llm",
    )


def zeros(*dims: str) -> dict[str, int]:
    return dict.fromkeys(dims, 0)


class Boom(Exception):
    """The exception the tests raise inside reservation blocks."""


def record_then_fail(r: Reservation, **amounts: int) -> None:
    """Record *amounts* on *r*, then raise Boom."""
    r.record(amounts)
    raise Boom


class TestReserveOnEnter:
    async def test_nothing_is_reserved_before_enter(self) -> None:
        """Building a reservation reserves nothing; entering it does."""
        budget = Budget({TOKENS: 100})
        reservation = budget.reserve(tokens=40)
        assert {TOKENS: 0} == await reserved(budget)
        async with reservation:
            assert {TOKENS: 40} == await reserved(budget)

    async def test_the_context_value_is_the_reservation(self) -> None:
        """``async with budget.reserve(...) as r`` binds the reservation itself."""
        budget = Budget({TOKENS: 100})
        reservation = budget.reserve(tokens=1)
        async with reservation as entered:
            assert reservation is entered
            assert entered.held

    async def test_reserve_keywords_mapping_and_usage(self) -> None:
        """Amounts come as keywords, a mapping, or a Usage mapped onto the dimensions."""
        budget = llm_budget()
        async with budget.reserve(tokens=10, calls=1):
            assert {TOKENS: 10, INPUT_TOKENS: 0, OUTPUT_TOKENS: 0, COST: 0, CALLS: 1} == (
                await reserved(budget)
            )
        async with budget.reserve({COST: 7, CALLS: 2}):
            assert {TOKENS: 0, INPUT_TOKENS: 0, OUTPUT_TOKENS: 0, COST: 7, CALLS: 2} == (
                await reserved(budget)
            )
        async with budget.reserve(Usage(input_tokens=3, output_tokens=4, calls=1)):
            assert {TOKENS: 7, INPUT_TOKENS: 3, OUTPUT_TOKENS: 4, COST: 0, CALLS: 1} == (
                await reserved(budget)
            )

    async def test_mapping_and_keywords_add_up(self) -> None:
        """A mapping and keywords given together are added."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        async with budget.reserve({TOKENS: 10, CALLS: 1}, tokens=5) as r:
            assert {TOKENS: 15, CALLS: 1} == r.amounts
            assert {TOKENS: 15, CALLS: 1} == await reserved(budget)

    async def test_mapping_serves_names_that_collide_with_options(self) -> None:
        """A dimension named like an option (``timeout``) is reserved through a mapping."""
        budget = Budget({"timeout": 10, "strict": 10})
        async with budget.reserve({"timeout": 3}) as r:
            r.record({"timeout": 2})
        assert 2 == (await spent(budget))["timeout"]
        assert CONTINUE == await budget.charge({"strict": 1})
        assert {"timeout": 2, "strict": 1} == await spent(budget)

    async def test_a_denial_raises_and_changes_nothing(self) -> None:
        """A reservation that does not fit raises BudgetExhausted at once, holding nothing."""
        budget = Budget({TOKENS: 100, CALLS: 5}, name="b")
        await budget.charge(tokens=70)
        before = await budget.snapshot()
        with pytest.raises(BudgetExhausted) as info:
            async with budget.reserve(tokens=40, calls=1):
                pytest.fail("the block must not run")
        assert (TOKENS, 40, 30, "b") == (
            info.value.dim,
            info.value.requested,
            info.value.remaining,
            info.value.budget,
        )
        assert before == await budget.snapshot()

    async def test_the_whole_limit_can_be_reserved(self) -> None:
        """``spent + reserved + amount == limit`` fits; one more does not."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=60)
        async with budget.reserve(tokens=40):
            assert {TOKENS: 0} == await budget.remaining()
        with pytest.raises(BudgetExhausted):
            async with budget.reserve(tokens=41):
                pass

    async def test_all_or_nothing_over_dimensions(self) -> None:
        """When one dimension does not fit, no dimension is reserved."""
        budget = Budget({TOKENS: 100, CALLS: 1})
        async with budget.reserve(calls=1):
            with pytest.raises(BudgetExhausted) as info:
                async with budget.reserve(tokens=5, calls=1):
                    pass
            assert CALLS == info.value.dim
            assert {TOKENS: 0, CALLS: 1} == await reserved(budget)

    async def test_zero_reservation(self) -> None:
        """A reservation of nothing always fits and changes nothing."""
        budget = Budget({TOKENS: 0})
        async with budget.reserve() as r:
            assert r.held
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


class TestRecordAndSettle:
    async def test_settles_what_was_recorded(self) -> None:
        """On exit the reservation is released and exactly the recorded usage is spent."""
        budget = Budget({TOKENS: 1_000, CALLS: 10})
        async with budget.reserve(tokens=400, calls=1) as r:
            r.record(tokens=123, calls=1)
            assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 400, CALLS: 1}) == await state(budget)
        assert ({TOKENS: 123, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_record_forms(self) -> None:
        """record takes a Usage, a mapping and keywords, and sums every call."""
        budget = llm_budget()
        async with budget.reserve(tokens=500, cost_micros=10_000, calls=1) as r:
            r.record(Usage(input_tokens=100, output_tokens=20, cost_micros=300))
            r.record({CALLS: 1, COST: 5})
            r.record(output_tokens=7)
            r.record({TOKENS: 1}, tokens=2)
            assert {
                TOKENS: 123,
                INPUT_TOKENS: 100,
                OUTPUT_TOKENS: 27,
                COST: 305,
                CALLS: 1,
            } == r.recorded
        assert {
            TOKENS: 123,
            INPUT_TOKENS: 100,
            OUTPUT_TOKENS: 27,
            COST: 305,
            CALLS: 1,
        } == await spent(budget)

    async def test_usage_above_the_reservation_is_charged(self) -> None:
        """Recording more than was reserved charges it all, even past the limit."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=10) as r:
            r.record(tokens=150)
        assert {TOKENS: 150} == await spent(budget)
        assert Verdict(Status.EXHAUSTED, TOKENS) == r.verdict

    async def test_record_of_zero_is_recorded(self) -> None:
        """Recording zero usage is recording: it charges nothing and logs no unrecorded."""
        budget = Budget({TOKENS: 100}, name="z")
        with capture_logs() as logs:
            async with budget.reserve(tokens=10) as r:
                r.record(tokens=0)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        assert [] == [e for e in logs if e["event"] == "budget.unrecorded"]

    async def test_settles_exactly_once(self) -> None:
        """The exit settles once: a later commit or release raises and refunds nothing."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=50) as r:
            r.record(tokens=5)
        with pytest.raises(ReservationClosed):
            await r.commit()
        with pytest.raises(ReservationClosed):
            await r.release()
        assert ({TOKENS: 5}, {TOKENS: 0}) == await state(budget)

    async def test_verdict_after_exit(self) -> None:
        """``r.verdict`` is None while held and the settle's verdict after exit."""
        budget = Budget({TOKENS: Limit(100, warn=50)})
        async with budget.reserve(tokens=10) as r:
            assert r.verdict is None
            r.record(tokens=60)
        assert Verdict(Status.WARN, TOKENS) == r.verdict

    async def test_record_after_exit_raises(self) -> None:
        """Recording on a closed reservation raises ReservationClosed and charges nothing."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=10) as r:
            r.record(tokens=1)
        with pytest.raises(ReservationClosed):
            r.record(tokens=1)
        assert {TOKENS: 1} == await spent(budget)


class TestNothingRecorded:
    async def test_normal_exit_refunds_everything(self) -> None:
        """A normal exit with nothing recorded charges nothing."""
        budget = Budget({TOKENS: 100, CALLS: 2})
        async with budget.reserve(tokens=50, calls=1) as r:
            pass
        assert ({TOKENS: 0, CALLS: 0}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        assert CONTINUE == r.verdict

    async def test_exception_refunds_everything(self) -> None:
        """An exception with nothing recorded refunds everything and propagates."""
        budget = Budget({TOKENS: 100})
        with pytest.raises(Boom):
            async with budget.reserve(tokens=50):
                raise Boom
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_cancellation_refunds_everything(self) -> None:
        """A cancellation with nothing recorded refunds everything."""
        budget = Budget({TOKENS: 100})
        with anyio.CancelScope() as scope:
            async with budget.reserve(tokens=50):
                scope.cancel()
                await anyio.lowlevel.checkpoint()
                pytest.fail("the checkpoint must raise")
        assert scope.cancelled_caught
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_on_unrecorded_charge_charges_the_reservation(self) -> None:
        """With ``on_unrecorded="charge"`` a normal exit with nothing recorded charges it all."""
        budget = Budget({TOKENS: 100, CALLS: 2})
        async with budget.reserve(tokens=30, calls=1, on_unrecorded="charge"):
            pass
        assert ({TOKENS: 30, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)

    async def test_on_unrecorded_charge_does_not_apply_to_failures(self) -> None:
        """``on_unrecorded="charge"`` is for normal exits: an exception still refunds."""
        budget = Budget({TOKENS: 100})
        with pytest.raises(Boom):
            async with budget.reserve(tokens=30, on_unrecorded="charge"):
                raise Boom
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_on_unrecorded_charge_with_usage_recorded_charges_the_usage(self) -> None:
        """``on_unrecorded="charge"`` changes nothing when usage was recorded."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=30, on_unrecorded="charge") as r:
            r.record(tokens=4)
        assert {TOKENS: 4} == await spent(budget)

    @pytest.mark.parametrize(("action", "charged"), [("refund", 0), ("charge", 30)])
    async def test_unrecorded_is_logged_either_way(self, action: str, charged: int) -> None:
        """A normal exit with nothing recorded logs ``budget.unrecorded`` with its action."""
        budget = Budget({TOKENS: 100}, name="forgetful")
        with capture_logs() as logs:
            async with budget.reserve(tokens=30, on_unrecorded=action):  # type: ignore[arg-type]
                pass
        events = [e for e in logs if e["event"] == "budget.unrecorded"]
        assert [("forgetful", {TOKENS: 30}, action, "warning")] == [
            (e["budget"], e["reserved"], e["action"], e["log_level"]) for e in events
        ]
        assert {TOKENS: charged} == await spent(budget)

    async def test_unrecorded_is_not_logged_on_failure(self) -> None:
        """An exception with nothing recorded is no forgotten record: no ``unrecorded``."""
        budget = Budget({TOKENS: 100})
        with capture_logs() as logs, pytest.raises(Boom):
            async with budget.reserve(tokens=30):
                raise Boom
        assert [] == [e for e in logs if e["event"] == "budget.unrecorded"]


class TestRecordedThenFailed:
    async def test_exception_charges_what_was_recorded(self) -> None:
        """Usage recorded before an exception happened: it is charged, the rest refunded."""
        budget = Budget({TOKENS: 100, CALLS: 5})
        with pytest.raises(Boom):
            async with budget.reserve(tokens=50, calls=1) as r:
                record_then_fail(r, tokens=12, calls=1)
        assert ({TOKENS: 12, CALLS: 1}, {TOKENS: 0, CALLS: 0}) == await state(budget)
        assert CONTINUE == r.verdict

    async def test_cancellation_charges_what_was_recorded(self) -> None:
        """Usage recorded before a cancellation is charged, the rest refunded."""
        budget = Budget({TOKENS: 100})
        with anyio.CancelScope() as scope:
            async with budget.reserve(tokens=50) as r:
                r.record(tokens=12)
                scope.cancel()
                await anyio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert ({TOKENS: 12}, {TOKENS: 0}) == await state(budget)
        assert CONTINUE == r.verdict


class TestCommit:
    async def test_commit_settles_early_and_returns_the_verdict(self) -> None:
        """``await r.commit()`` settles at once; the verdict is returned and kept."""
        budget = Budget({TOKENS: Limit(100, warn=10)})
        async with budget.reserve(tokens=50) as r:
            r.record(tokens=20)
            verdict = await r.commit()
            assert Verdict(Status.WARN, TOKENS) == verdict
            assert verdict == r.verdict
            assert not r.held
            assert ({TOKENS: 20}, {TOKENS: 0}) == await state(budget)
        assert ({TOKENS: 20}, {TOKENS: 0}) == await state(budget)
        assert verdict == r.verdict

    async def test_commit_twice_raises(self) -> None:
        """A second commit raises ReservationClosed and charges nothing more."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=50) as r:
            r.record(tokens=5)
            await r.commit()
            with pytest.raises(ReservationClosed):
                await r.commit()
        assert ({TOKENS: 5}, {TOKENS: 0}) == await state(budget)

    async def test_record_after_commit_raises(self) -> None:
        """Recording after commit raises ReservationClosed: the usage would go unbilled."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=50) as r:
            await r.commit()
            with pytest.raises(ReservationClosed):
                r.record(tokens=5)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_commit_unrecorded_follows_on_unrecorded(self) -> None:
        """Committing with nothing recorded does what a normal exit does."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=9, on_unrecorded="charge")
        assert r is not None
        await r.commit()
        assert ({TOKENS: 9}, {TOKENS: 0}) == await state(budget)

    async def test_commit_before_enter_raises(self) -> None:
        """A reservation not yet entered holds nothing to commit."""
        budget = Budget({TOKENS: 100})
        with pytest.raises(ReservationClosed):
            await budget.reserve(tokens=5).commit()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)


class TestRelease:
    async def test_release_gives_everything_back(self) -> None:
        """``await r.release()`` refunds the whole reservation, even recorded usage."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=50) as r:
            r.record(tokens=20)
            verdict = await r.release()
            assert CONTINUE == verdict
            assert verdict == r.verdict
            assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_release_twice_raises(self) -> None:
        """A second release raises ReservationClosed and refunds nothing more."""
        budget = Budget({TOKENS: 100})
        other = await budget.try_reserve(tokens=30)
        r = await budget.try_reserve(tokens=50)
        assert r is not None
        assert other is not None
        await r.release()
        with pytest.raises(ReservationClosed):
            await r.release()
        assert {TOKENS: 30} == await reserved(budget)
        await other.release()


class TestReservationClosed:
    async def test_enter_after_exit_raises(self) -> None:
        """Entering a reservation that was already used raises ReservationClosed."""
        budget = Budget({TOKENS: 100})
        r = budget.reserve(tokens=10)
        async with r:
            pass
        with pytest.raises(ReservationClosed):
            async with r:
                pytest.fail("the block must not run")
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_enter_after_denial_raises(self) -> None:
        """A denied reservation is closed: entering it again raises ReservationClosed."""
        budget = Budget({TOKENS: 10})
        r = budget.reserve(tokens=11)
        with pytest.raises(BudgetExhausted):
            await r.__aenter__()
        with pytest.raises(ReservationClosed):
            await r.__aenter__()
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_record_on_a_denied_reservation_raises(self) -> None:
        """Recording on a reservation that was denied raises ReservationClosed."""
        budget = Budget({TOKENS: 10})
        r = budget.reserve(tokens=11)
        with pytest.raises(BudgetExhausted):
            await r.__aenter__()
        with pytest.raises(ReservationClosed):
            r.record(tokens=1)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_release_after_commit_raises(self) -> None:
        """Releasing a committed reservation raises: it would refund spent usage."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=10)
        assert r is not None
        r.record(tokens=3)
        await r.commit()
        with pytest.raises(ReservationClosed):
            await r.release()
        assert ({TOKENS: 3}, {TOKENS: 0}) == await state(budget)


class TestTryReserve:
    async def test_returns_an_entered_reservation(self) -> None:
        """A fitting try_reserve returns a reservation that already holds the budget."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=40)
        assert isinstance(r, Reservation)
        assert r.held
        assert {TOKENS: 40} == await reserved(budget)
        await r.release()

    async def test_returns_none_when_it_does_not_fit(self) -> None:
        """A try_reserve that does not fit returns None and changes nothing."""
        budget = Budget({TOKENS: 100})
        await budget.charge(tokens=90)
        before = await budget.snapshot()
        assert await budget.try_reserve(tokens=11) is None
        assert before == await budget.snapshot()

    async def test_async_with_on_the_result_settles_it(self) -> None:
        """``async with`` on a try_reserve result settles it on exit, once."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=40)
        assert r is not None
        async with r as entered:
            assert r is entered
            assert {TOKENS: 40} == await reserved(budget)
            entered.record(tokens=7)
        assert ({TOKENS: 7}, {TOKENS: 0}) == await state(budget)

    async def test_async_with_on_the_result_refunds_on_exception(self) -> None:
        """An exception in ``async with`` on a try_reserve result refunds it."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=40)
        assert r is not None
        with pytest.raises(Boom):
            async with r:
                raise Boom
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_takes_the_same_forms_as_reserve(self) -> None:
        """try_reserve takes a Usage, a mapping, keywords and the options of reserve."""
        budget = llm_budget()
        r = await budget.try_reserve(
            Usage(input_tokens=5, calls=1), use_headroom=True, on_unrecorded="charge", calls=1
        )
        assert r is not None
        assert {TOKENS: 5, INPUT_TOKENS: 5, OUTPUT_TOKENS: 0, COST: 0, CALLS: 2} == r.amounts
        assert await budget.try_reserve({CALLS: 8}, calls=1) is None
        await r.commit()
        assert {TOKENS: 5, INPUT_TOKENS: 5, OUTPUT_TOKENS: 0, COST: 0, CALLS: 2} == await spent(
            budget
        )


class TestRequestLimit:
    async def test_reservation_above_it_is_refused(self) -> None:
        """A reservation above its request_limit raises RequestLimitExceeded at once."""
        budget = Budget({TOKENS: 1_000, CALLS: 10}, name="r")
        before = await budget.snapshot()
        with pytest.raises(RequestLimitExceeded) as info:
            async with budget.reserve(tokens=200, calls=1, request_limit={TOKENS: 100}):
                pytest.fail("the block must not run")
        assert (TOKENS, 200, 100, "r") == (
            info.value.dim,
            info.value.requested,
            info.value.limit,
            info.value.budget,
        )
        assert isinstance(info.value, BudgetExhausted)
        assert before == await budget.snapshot()

    async def test_try_reserve_above_it_raises_too(self) -> None:
        """A request limit is a caller's bug, not a denial: try_reserve raises as well."""
        budget = Budget({TOKENS: 1_000})
        with pytest.raises(RequestLimitExceeded):
            await budget.try_reserve(tokens=200, request_limit={TOKENS: 100})
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_reservation_at_it_fits(self) -> None:
        """A reservation equal to the request_limit is fine."""
        budget = Budget({TOKENS: 1_000})
        async with budget.reserve(tokens=100, request_limit={TOKENS: 100}) as r:
            r.record(tokens=100)
        assert not r.over_request_limit

    async def test_actual_above_it_is_charged_and_flagged(self) -> None:
        """Actual usage above the request_limit is charged, flagged and logged."""
        budget = Budget({TOKENS: 1_000, CALLS: 10}, name="r")
        with capture_logs() as logs:
            async with budget.reserve(tokens=50, calls=1, request_limit={TOKENS: 100}) as r:
                assert not r.over_request_limit
                r.record(tokens=150, calls=3)
        assert r.over_request_limit
        assert {TOKENS: 150, CALLS: 3} == await spent(budget)
        events = [e for e in logs if e["event"] == "budget.over_request_limit"]
        assert [("r", TOKENS, 150, 100)] == [
            (e["budget"], e["dim"], e["actual"], e["limit"]) for e in events
        ]

    async def test_only_named_dimensions_are_capped(self) -> None:
        """Dimensions a request_limit does not name are not capped (calls here)."""
        budget = Budget({TOKENS: 1_000, CALLS: 10})
        async with budget.reserve(tokens=50, calls=5, request_limit={TOKENS: 100}) as r:
            r.record(tokens=1, calls=9)
        assert not r.over_request_limit

    async def test_usage_form(self) -> None:
        """A request_limit may be a Usage, mapped onto the budget's dimensions."""
        budget = llm_budget()
        limit = Usage(input_tokens=100, output_tokens=50)
        with pytest.raises(RequestLimitExceeded) as info:
            await budget.try_reserve(output_tokens=51, request_limit=limit)
        assert OUTPUT_TOKENS == info.value.dim
        async with budget.reserve(tokens=150, request_limit=limit) as r:
            r.record(Usage(input_tokens=100, output_tokens=51))
        assert r.over_request_limit

    async def test_a_zero_in_a_mapping_is_a_cap_of_zero(self) -> None:
        """A mapping names the dimensions it caps, 0 included: ``{COST: 0}`` is a request
        that may not cost anything."""
        budget = llm_budget()
        with pytest.raises(RequestLimitExceeded) as info:
            budget.reserve(calls=1, cost_micros=1, request_limit={COST: 0})
        assert (COST, 0) == (info.value.dim, info.value.limit)
        async with budget.reserve(calls=1, request_limit={COST: 0}) as r:
            r.record(calls=1, cost_micros=5)
        assert r.over_request_limit

    async def test_a_zero_field_of_a_usage_caps_nothing(self) -> None:
        """A Usage cannot tell 0 from "not given", so its zero fields (and zero extra
        entries) cap nothing, while ``tokens`` is capped at input plus output."""
        budget = Budget({TOKENS: 1_000, INPUT_TOKENS: 600, COST: 50_000, CALLS: 10, "gpu": 5})
        limit = Usage(input_tokens=100, extra={"gpu": 0})
        async with budget.reserve(calls=9, cost_micros=40_000, gpu=5, request_limit=limit) as r:
            r.record(calls=9, cost_micros=40_000, gpu=5, input_tokens=100, tokens=100)
        assert not r.over_request_limit
        with pytest.raises(RequestLimitExceeded) as info:
            budget.reserve(tokens=101, request_limit=limit)
        assert (TOKENS, 100) == (info.value.dim, info.value.limit)

    async def test_flagged_on_exception_too(self) -> None:
        """Recorded usage above the limit is flagged even when the block raised."""
        budget = Budget({TOKENS: 1_000})
        with pytest.raises(Boom):
            async with budget.reserve(tokens=10, request_limit={TOKENS: 10}) as r:
                record_then_fail(r, tokens=11)
        assert r.over_request_limit
        assert {TOKENS: 11} == await spent(budget)


class TestHeadroom:
    async def test_ordinary_reservations_leave_it_alone(self) -> None:
        """Without use_headroom a reservation may use only ``limit - headroom``."""
        budget = Budget({TOKENS: Limit(100, headroom=20)})
        async with budget.reserve(tokens=80):
            pass
        with pytest.raises(BudgetExhausted) as info:
            async with budget.reserve(tokens=81):
                pass
        assert 80 == info.value.remaining

    async def test_use_headroom_may_use_it(self) -> None:
        """With use_headroom a reservation may go up to the limit."""
        budget = Budget({TOKENS: Limit(100, headroom=20)})
        async with budget.reserve(tokens=80):
            assert await budget.try_reserve(tokens=1) is None
            r = await budget.try_reserve(tokens=20, use_headroom=True)
            assert r is not None
            assert await budget.try_reserve(tokens=1, use_headroom=True) is None
            await r.release()

    async def test_headroom_after_spend(self) -> None:
        """Headroom is kept after spend: with 70 spent of 100 and 20 kept, 10 remain."""
        budget = Budget({TOKENS: Limit(100, headroom=20)})
        await budget.charge(tokens=70)
        assert await budget.try_reserve(tokens=11) is None
        r = await budget.try_reserve(tokens=10)
        assert r is not None
        await r.release()
        r = await budget.try_reserve(tokens=30, use_headroom=True)
        assert r is not None
        await r.release()


class TestGarbageCollected:
    async def test_entered_and_dropped_refunds_with_a_resource_warning(self) -> None:
        """A reservation entered and dropped without exit is refunded when collected."""
        budget = Budget({TOKENS: 100})
        refs = [budget.reserve(tokens=40)]
        await refs[0].__aenter__()
        refs[0].record(tokens=5)  # a dropped reservation is refunded, record or not
        assert {TOKENS: 40} == await reserved(budget)
        with pytest.warns(ResourceWarning, match="garbage-collected while holding budget"):
            drop(refs)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)

    async def test_try_reserve_dropped_refunds_with_a_resource_warning(self) -> None:
        """A try_reserve result dropped unclosed is refunded when collected."""
        budget = Budget({TOKENS: 100})
        r = await budget.try_reserve(tokens=100)
        assert r is not None
        assert await budget.try_reserve(tokens=1) is None
        refs = [r]
        del r
        with pytest.warns(ResourceWarning):
            drop(refs)
        assert ({TOKENS: 0}, {TOKENS: 0}) == await state(budget)
        again = await budget.try_reserve(tokens=100)
        assert again is not None
        await again.release()

    async def test_closed_reservations_are_collected_silently(self) -> None:
        """A settled or never-entered reservation warns nothing when collected."""
        budget = Budget({TOKENS: 100})
        async with budget.reserve(tokens=10) as r:
            r.record(tokens=1)
        unused = budget.reserve(tokens=10)
        del r, unused
        gc.collect()  # filterwarnings=error turns a stray ResourceWarning into a failure
        assert ({TOKENS: 1}, {TOKENS: 0}) == await state(budget)
