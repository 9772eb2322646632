"""Dispatch policy: limits, pauses, rate limits and preemption (pure where possible)."""
