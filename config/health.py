"""`GET /healthz`: is this web node able to serve? For load balancers and orchestrators.

Answered by a middleware placed first, so a probe costs one `SELECT 1` and one Redis PING and
nothing else: no host check (probes often use the node's IP as Host), no session, no auth, no
access log line. 200 `{"status": "ok", "checks": {...}}` or 503 naming what failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

PATHS = {"/healthz", "/healthz/"}
# A probe must answer well within the orchestrator's own timeout (usually 1 to 5 s).
REDIS_TIMEOUT_SECONDS = 1.0


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_redis() -> None:
    _redis(settings.REDIS_URL).ping()


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "redis": check_redis}


def health() -> tuple[bool, dict[str, str]]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure is the answer, not an error of the probe
            # The type only: a connection string in an exception message must not reach a public page.
            results[name] = f"error: {type(exc).__name__}"
            logger.warning("health check %s failed: %s", name, exc)
        else:
            results[name] = "ok"
    return all(value == "ok" for value in results.values()), results


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in PATHS:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"status": "error", "detail": "GET only"}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        ok, checks = health()
        failed = [name for name, value in checks.items() if value != "ok"]
        body = {"status": "ok" if ok else "error", "checks": checks}
        if failed:
            body["failed"] = failed
        response = JsonResponse(body, status=200 if ok else 503)
        response["Cache-Control"] = "no-store"
        return response
