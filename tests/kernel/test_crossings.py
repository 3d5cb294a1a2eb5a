"""Unit tests of the kernel's verdicts over time: how an operation moves a ledger
between CONTINUE, WARN and EXHAUSTED, and the crossings reported once per rise (SPEC
"Limits and verdicts", "warn and exhausted are logged once per crossing")."""

# The house style is `assert expected == actual` (STYLE.md), which SIM300 calls Yoda.

from __future__ import annotations

from aiobudget.kernel import (
    Crossing,
    Limit,
    Outcome,
)

from ._support import CONTINUE, exhausted, hold, single, warn


class TestVerdictTransitions:
    def test_continue_warn_exhausted_and_back_after_reset(self) -> None:
        """CONTINUE below warn, WARN from warn, EXHAUSTED from the limit, CONTINUE after reset."""
        ledger, chain = single({"a": Limit(10, warn=6)})
        assert Outcome(CONTINUE) == chain.charge((5,))
        assert CONTINUE == ledger.verdict()
        assert warn("a") == chain.charge((1,)).verdict
        assert warn("a") == ledger.verdict()
        assert warn("a") == chain.charge((3,)).verdict
        assert exhausted("a") == chain.charge((1,)).verdict
        assert exhausted("a") == ledger.verdict()
        assert Outcome(CONTINUE) == ledger.reset()
        assert CONTINUE == ledger.verdict()

    def test_reserved_counts_toward_the_verdict(self) -> None:
        """A verdict compares spent + reserved with warn and limit."""
        ledger, chain = single({"a": Limit(10, warn=6)})
        chain.charge((3,))
        assert warn("a") == hold(chain, (3,)).outcome.verdict
        lease = hold(chain, (4,))
        assert exhausted("a") == lease.outcome.verdict
        assert warn("a") == lease.release().verdict
        assert warn("a") == ledger.verdict()

    def test_without_warn_there_is_no_warn(self) -> None:
        """A dimension without a warn level goes straight from CONTINUE to EXHAUSTED."""
        _, chain = single({"a": 10})
        assert CONTINUE == chain.charge((9,)).verdict
        assert exhausted("a") == chain.charge((1,)).verdict

    def test_zero_limit_is_exhausted_from_the_start(self) -> None:
        """spent + reserved >= limit holds at 0 for a limit of 0."""
        ledger, _ = single({"a": 5, "z": 0})
        assert exhausted("z") == ledger.verdict()

    def test_warn_at_zero_warns_from_the_start(self) -> None:
        """spent + reserved >= warn holds at 0 for a warn level of 0."""
        ledger, _ = single({"a": Limit(5, warn=0)})
        assert warn("a") == ledger.verdict()

    def test_first_dimension_in_declaration_order_at_warn(self) -> None:
        """Several dimensions at WARN: the first declared is named."""
        ledger, chain = single({"a": Limit(10, warn=5), "b": Limit(10, warn=5)})
        chain.charge((0, 5))
        assert warn("b") == ledger.verdict()
        assert warn("a") == chain.charge((5, 0)).verdict

    def test_first_dimension_in_declaration_order_when_exhausted(self) -> None:
        """Several dimensions EXHAUSTED: the first declared is named."""
        ledger, chain = single({"a": 10, "b": 10, "c": 10})
        chain.charge((0, 0, 10))
        assert exhausted("c") == ledger.verdict()
        assert exhausted("b") == chain.charge((0, 10, 0)).verdict

    def test_exhausted_beats_an_earlier_warn(self) -> None:
        """A later EXHAUSTED dimension is named over an earlier WARN one."""
        ledger, chain = single({"a": Limit(10, warn=1), "b": Limit(10, warn=1)})
        chain.charge((5, 10))
        assert exhausted("b") == ledger.verdict()
        assert exhausted("b") == chain.verdict()

    def test_settle_below_every_alert_level_is_continue(self) -> None:
        """A settle that leaves every dimension below its warn and limit is CONTINUE."""
        _, chain = single({"a": Limit(10, warn=8), "b": 10})
        lease = hold(chain, (9, 9))
        assert Outcome(CONTINUE) == lease.settle((2, 2))


class TestCrossings:
    def test_each_rise_is_reported_once(self) -> None:
        """CONTINUE -> WARN and WARN -> EXHAUSTED are each reported once."""
        _, chain = single({"a": Limit(10, warn=5)}, name="run")
        assert () == chain.charge((4,)).crossings
        assert (Crossing("run", warn("a")),) == chain.charge((1,)).crossings
        assert () == chain.charge((1,)).crossings
        assert (Crossing("run", exhausted("a")),) == chain.charge((4,)).crossings
        assert () == chain.charge((1,)).crossings

    def test_straight_to_exhausted_is_one_crossing(self) -> None:
        """Jumping past warn to the limit is a single EXHAUSTED crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        assert (Crossing("b", exhausted("a")),) == chain.charge((10,)).crossings

    def test_fall_and_rise_again_is_not_reported_before_a_reset(self) -> None:
        """Falling back below warn and rising again is not a new crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        lease = hold(chain, (6,))
        assert (Crossing("b", warn("a")),) == lease.outcome.crossings
        lease.release()
        assert Outcome(warn("a")) == hold(chain, (6,)).outcome

    def test_reported_again_after_a_reset(self) -> None:
        """After a reset, rising again is reported again."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        chain.charge((10,))
        ledger.reset()
        assert (Crossing("b", warn("a")),) == chain.charge((5,)).crossings
        assert (Crossing("b", exhausted("a")),) == chain.charge((5,)).crossings

    def test_reset_at_warn_does_not_report_warn_again(self) -> None:
        """A reset that leaves live reservations at WARN takes WARN as already reported."""
        ledger, chain = single({"a": Limit(10, warn=5)})
        hold(chain, (6,))
        assert Outcome(warn("a")) == ledger.reset()
        assert Outcome(warn("a")) == chain.charge((1,))
        assert (Crossing("b", exhausted("a")),) == chain.charge((3,)).crossings

    def test_settle_reports_a_crossing(self) -> None:
        """A settle whose actual usage crosses a level reports it."""
        _, chain = single({"a": Limit(10, warn=5)})
        lease = hold(chain, (1,))
        assert Outcome(exhausted("a"), (Crossing("b", exhausted("a")),)) == lease.settle((10,))

    def test_loud_settle_without_rise_reports_nothing(self) -> None:
        """A settle that stays at an already reported status reports no crossing."""
        _, chain = single({"a": Limit(10, warn=5)})
        chain.charge((6,))
        assert Outcome(warn("a")) == hold(chain, (1,)).settle((1,))
