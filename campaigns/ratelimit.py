"""The global SES send rate: one token bucket in Redis shared by every worker on every machine.

SES enforces a per-account maximum send rate; exceeding it returns throttling errors, and a
fleet of workers each pacing itself locally would exceed it as soon as there were two of them.
The bucket lives in Redis, is refilled by elapsed time, and uses Redis' own clock (TIME) so
machines with skewed clocks still agree.
"""

from __future__ import annotations

import time
from functools import cache

import redis
from django.conf import settings

# KEYS[1] bucket; ARGV: rate (tokens/s), capacity, tokens wanted.
# Returns 0 when granted, else the milliseconds until that many tokens will be there.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = math.ceil((wanted - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return wait
"""


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


class SendRateLimiter:
    def __init__(self, *, rate: float, capacity: float | None = None, key: str = "ses") -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # A bucket holds at most one second of sends: a burst never exceeds the per-second rate.
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self.key = f"{settings.REDIS_PREFIX}:ratelimit:{key}"
        self._script = _client(settings.REDIS_URL).register_script(_TAKE)

    @classmethod
    def for_ses(cls) -> SendRateLimiter:
        return cls(rate=settings.SES_MAX_SEND_RATE)

    @property
    def max_batch(self) -> int:
        """The most tokens one call can ever be granted."""
        return max(1, int(self.capacity))

    def try_acquire(self, tokens: int = 1) -> float:
        """Take `tokens` now if there are enough; else take none and return seconds to wait."""
        if tokens > self.capacity:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of {self.capacity}")
        wait_ms = int(self._script(keys=[self.key], args=[self.rate, self.capacity, tokens]))
        return wait_ms / 1000.0

    def acquire(self, tokens: int = 1, *, timeout: float = 300.0) -> None:
        """Block until `tokens` are granted. Raises TimeoutError past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            wait = self.try_acquire(tokens)
            if wait == 0:
                return
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"send rate limit: no {tokens} tokens within {timeout}s")
            time.sleep(wait)
