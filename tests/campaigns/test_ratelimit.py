from __future__ import annotations

import uuid

import pytest

from campaigns.ratelimit import SendRateLimiter


def limiter(rate: float) -> SendRateLimiter:
    return SendRateLimiter(rate=rate, key=f"test-{uuid.uuid4().hex}")


def test_it_grants_one_seconds_worth_of_sends_then_makes_callers_wait() -> None:
    bucket = limiter(10)

    grants = [bucket.try_acquire(1) for _ in range(10)]
    refused = bucket.try_acquire(5)

    assert grants == [0.0] * 10
    # Five more tokens at ten a second: about half a second away (minus what refilled meanwhile).
    assert 0.3 < refused <= 0.5


def test_a_refused_request_takes_nothing() -> None:
    bucket = limiter(10)
    bucket.try_acquire(8)

    assert bucket.try_acquire(5) > 0
    assert bucket.try_acquire(2) == 0.0


def test_workers_share_one_bucket() -> None:
    key = f"test-{uuid.uuid4().hex}"
    first, second = SendRateLimiter(rate=4, key=key), SendRateLimiter(rate=4, key=key)

    assert first.try_acquire(4) == 0.0
    assert second.try_acquire(1) > 0


def test_it_refuses_a_request_larger_than_the_bucket() -> None:
    with pytest.raises(ValueError, match="cannot take"):
        limiter(5).try_acquire(6)
