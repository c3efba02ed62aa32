"""`Idempotency-Key` for every POST under `/api/` and for public forms under `/f/`.

Why a middleware and not a view decorator or DRF mixin: the rule must hold for every POST of the
API, including views written later by others, and for the plain Django form view. A middleware
sees the final rendered response of any view (DRF or not) and needs no per-view code. The price is
that it runs before DRF authentication, so it resolves the scope itself: the workspace of the
Bearer API key (one indexed lookup, only when the header is present) or the form key in the path.
A request whose key does not authenticate is passed through untouched and the view answers 401.

Records live in the database, not Redis: the unique (scope, key) row is both the in-flight lock
and the stored response, it survives a restart of web processes and Redis, and it is inserted in
its own autocommitted statement so a concurrent duplicate sees it at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils import timezone

from crm.errors import error_body
from crm.models import IDEMPOTENCY_TTL, ApiKey, IdempotencyRecord

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# A request that has been "in flight" this long belongs to a process that died: let a retry run.
DEFAULT_LOCK_TIMEOUT = timedelta(minutes=5)
# Responses that say "try again" must not be frozen: a retry with the same key has to run for real.
# 404 is not kept either, so posting to made-up form keys cannot fill the table.
NOT_STORED = {401, 403, 404, 409, 429}
REPLAYED_HEADERS = ("Location", "Access-Control-Allow-Origin", "Vary", "Content-Disposition", "Retry-After")


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message, {HEADER: [message]}), status=status)


def request_fingerprint(request: HttpRequest) -> str:
    """What "the same request" means: method, path, query string and the exact body bytes."""
    digest = hashlib.sha256()
    for part in (request.method or "", request.get_full_path()):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def scope_for(request: HttpRequest) -> str | None:
    """The namespace keys are unique in, or None when this request is not covered."""
    if request.method != "POST":
        return None
    path = request.path_info
    if path.startswith("/f/"):
        form_key = path[3:].split("/", 1)[0]
        return f"form:{form_key}" if form_key else None
    if path.startswith("/api/"):
        scheme, _, secret = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        key = ApiKey.objects.authenticate(secret.strip())
        return f"workspace:{key.workspace_id}" if key else None
    return None


class IdempotencyMiddleware:
    """Replays the stored response for a repeated key; 422 when the key is reused for a different
    request; 409 while the first request with the key is still running."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        key = request.headers.get(HEADER)
        if key is None:
            return self.get_response(request)
        scope = scope_for(request)
        if scope is None:
            return self.get_response(request)
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            return _error(400, "invalid", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters.")
        try:
            fingerprint = request_fingerprint(request)
        except Exception:  # too big or unreadable: let the view answer with its own 4xx
            return self.get_response(request)

        record, outcome = self._claim(scope=scope, key=key, fingerprint=fingerprint)
        if outcome is not None:
            return outcome
        try:
            response = self.get_response(request)
        except BaseException:
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
            raise
        self._store(record, response)
        return response

    def _claim(self, *, scope: str, key: str, fingerprint: str) -> tuple[IdempotencyRecord, HttpResponse | None]:
        now = timezone.now()
        lock_timeout = getattr(settings, "IDEMPOTENCY_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT)
        for _ in range(3):
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        scope=scope, key=key, request_hash=fingerprint, created_at=now
                    )
                return record, None
            except IntegrityError:
                existing = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
            if existing is None:
                continue  # deleted between our insert and our read: try again
            expired = existing.created_at < now - IDEMPOTENCY_TTL
            abandoned = existing.in_flight and existing.created_at < now - lock_timeout
            if expired or abandoned:
                # Conditional delete: of two retries racing here, one wins and the other sees its row.
                IdempotencyRecord.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
                continue
            if existing.request_hash != fingerprint:
                return existing, _error(
                    422,
                    "idempotency_key_reused",
                    f"This {HEADER} was already used with a different request; use a new key.",
                )
            if existing.in_flight:
                return existing, _error(
                    409, "idempotency_conflict", f"A request with this {HEADER} is still being processed; retry later."
                )
            return existing, self._replay(existing)
        return existing, _error(409, "idempotency_conflict", f"A request with this {HEADER} is being processed.")

    @staticmethod
    def _replay(record: IdempotencyRecord) -> HttpResponse:
        response = HttpResponse(bytes(record.body), status=record.status_code, content_type=record.content_type)
        for name, value in (record.headers or {}).items():
            response[name] = value
        response["Idempotent-Replayed"] = "true"
        return response

    @staticmethod
    def _store(record: IdempotencyRecord, response: HttpResponseBase) -> None:
        storable = (
            isinstance(response, HttpResponse)
            and not response.streaming
            and response.status_code < 500
            and response.status_code not in NOT_STORED
        )
        if not storable:
            IdempotencyRecord.objects.filter(pk=record.pk).delete()
            return
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            status_code=response.status_code,
            content_type=response.get("Content-Type", ""),
            headers={name: response[name] for name in REPLAYED_HEADERS if response.has_header(name)},
            body=response.content,
        )


def purge_expired() -> int:
    """Delete records past their 24 hours; returns how many. Run it daily (beat or cron)."""
    deleted, _ = IdempotencyRecord.objects.expired().delete()
    return deleted
