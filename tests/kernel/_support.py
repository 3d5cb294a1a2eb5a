"""Small helpers shared by the kernel tests."""

from __future__ import annotations

from aiobudget.kernel import Chain, Denial, Lease, Ledger, Limit, Status, Verdict

CONTINUE = Verdict(Status.CONTINUE)


def warn(dim: str) -> Verdict:
    return Verdict(Status.WARN, dim)


def exhausted(dim: str) -> Verdict:
    return Verdict(Status.EXHAUSTED, dim)


def single(limits: dict[str, Limit | int], name: str | None = "b") -> tuple[Ledger, Chain]:
    """A ledger and the one-level chain over it."""
    ledger = Ledger(limits, name=name)
    return ledger, Chain([ledger])


def hold(chain: Chain, amounts: tuple[int, ...], *, use_headroom: bool = False) -> Lease:
    """Reserve *amounts*, which the test expects to fit."""
    lease = chain.reserve(amounts, use_headroom=use_headroom)
    assert isinstance(lease, Lease), lease
    return lease


def deny(chain: Chain, amounts: tuple[int, ...], *, use_headroom: bool = False) -> Denial:
    """Reserve *amounts*, which the test expects to be denied."""
    denial = chain.reserve(amounts, use_headroom=use_headroom)
    assert isinstance(denial, Denial), denial
    return denial


def counters(*ledgers: Ledger) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(spent, reserved)`` of each ledger."""
    return [(ledger.spent, ledger.reserved) for ledger in ledgers]
