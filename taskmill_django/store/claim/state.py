"""What one worker's claims carry from one claim to the next: a ``ClaimState``, owned by the
worker's claim loop and passed to every claim it makes.

Two lifetimes live here. The lock mode (whether the next gated claim takes the claim lock
exclusively) and whether the last claim gave way to take it belong to the worker, for as long
as it runs. The answers in ``PolicyMemo`` belong to one policy load: whole-queue scans (fair-
share demand, whether anything has aged) and hints (the live slots the shares divide, a bucket
that ran short) that would cost more than the claim if read every time, never the counts caps
need. A worker reloads its policy at least once a second, and each load is a new ``Policy``: a
claim under a policy other than the last one starts a fresh memo, so nothing found under one
policy load outlives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...policy.config import Policy


@dataclass
class PolicyMemo:
    """Answers a claim may reuse while one policy is current."""

    live_slots: int | None = None  # every live worker's slots, read by the last gated claim
    demand: dict[str | None, int] | None = None  # due or running tasks per group key
    demand_at: float = 0.0  # when ``demand`` was counted (time.monotonic)
    nothing_aged: bool = False  # no due row had waited long enough to age
    buckets_low: bool = False  # a bucket ran short: take tokens row by row


@dataclass
class ClaimState:
    """One worker's memory between claims (see the module docstring). A throwaway one, as
    ``claim_batch`` makes when given none, costs a gated claim its shortcuts, never its
    correctness.

    >>> state = ClaimState()
    >>> state.take_deferred()
    False
    """

    exclusive: bool = True  # the next gated claim takes the lock exclusively (a cap was in reach)
    deferred: bool = False  # the last claim gave way to take the lock exclusively
    # Tasks the worker holds per thread: 1, or more while it claims ahead (the claim loop
    # sets it). Fair shares divide the live slots times this, so the claimed-ahead queue is
    # held in the same proportions as the threads.
    held_per_slot: float = 1.0
    _policy: Policy | None = field(default=None, init=False, repr=False)
    _memo: PolicyMemo = field(default_factory=PolicyMemo, init=False, repr=False)

    def memo(self, policy: Policy) -> PolicyMemo:
        """The answers found under ``policy``: a fresh memo when it is not the policy of the
        last claim (the loop reloaded it)."""
        if policy is not self._policy:
            self._policy, self._memo = policy, PolicyMemo()
        return self._memo

    def give_way(self) -> None:
        """A cap is in reach while this claim held the lock shared: claim again at once,
        exclusively."""
        self.exclusive = True
        self.deferred = True

    def take_deferred(self) -> bool:
        """True once after a claim gave way to the exclusive lock (claim again at once
        instead of idling)."""
        deferred, self.deferred = self.deferred, False
        return deferred
