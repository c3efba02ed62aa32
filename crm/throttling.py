from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from crm.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """A fixed-window counter per API key in Redis.

    DRF's default throttle keeps a list of timestamps per client and rewrites it on every request,
    which races between web processes and grows with the rate. One atomic INCR per request per
    window (pipelined with its EXPIRE: one round trip) is exact across processes and machines, and
    O(1).
    """

    scope = "api_key"

    def get_rate(self) -> str | None:
        # Read at request time, not import time (DRF's class attribute), so a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return f"throttle:key:{request.auth.pk}"

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        count = _incr(f"{key}:{window}", ttl=int(self.duration) + 1)
        self._wait = (window + 1) * self.duration - now
        return count <= self.num_requests

    def wait(self) -> float:
        return max(1.0, getattr(self, "_wait", float(self.duration)))


def _incr(name: str, *, ttl: int) -> int:
    """INCR with expiry in one round trip to the cache's Redis."""
    key = cache.make_and_validate_key(name)
    client = cache._cache.get_client(key, write=True)  # type: ignore[attr-defined]
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, ttl)
        count, _ = pipe.execute()
    return int(count)
