"""Logs an operator can follow: a request id per HTTP request, the task id in the worker, and the
delivery and campaign ids on the engine's log lines, on every record as fields.

- `log_context` holds the fields of the current request or task (a ContextVar, so threads and
  async tasks never see each other's); `bind()` adds fields for a block.
- `ContextFilter` (on the console handler) copies them onto every record that passes, whichever
  logger emitted it, so Django's, Celery's and our own lines all carry them.
- `LOG_FORMAT=json` switches the console to one JSON object per line (python-json-logger);
  the plain format appends the fields as `key=value`.
- `RequestIdMiddleware` takes a sane `X-Request-ID` from the proxy or makes one, binds it, and
  returns it on the response. Tasks enqueued during the request carry it in a message header
  (`trickle_request_id`), and the worker binds it with the task id (see `connect_celery`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter

log_context: ContextVar[dict[str, Any]] = ContextVar("trickle_log_context", default={})  # noqa: B039 - never mutated

REQUEST_ID_HEADER = "X-Request-ID"
TASK_HEADER = "trickle_request_id"
# What a proxy or client may hand us: short, printable, no spaces, nothing a log parser chokes on.
SANE_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:@/+=-]{1,128}\Z")

request_logger = logging.getLogger("trickle.request")
# An unsubscribe token is the credential of its link: logs must not collect them.
SECRET_PATHS = re.compile(r"\A/u/[^/]+")


def current() -> dict[str, Any]:
    return log_context.get()


@contextmanager
def bind(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add fields to every log record emitted inside the block (and in code it calls)."""
    token = log_context.set({**log_context.get(), **fields})
    try:
        yield log_context.get()
    finally:
        log_context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record; a field passed with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in log_context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Fields the engine passes with `extra=`; the plain format shows them too (JSON shows every extra).
ENGINE_FIELDS = ("campaign_id", "delivery_ids", "dispatched_task_id", "outcomes", "ses_message_ids")


class PlainFormatter(logging.Formatter):
    """`make run`'s readable format, with the bound and engine fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        keys = [*log_context.get(), *ENGINE_FIELDS]
        fields = " ".join(f"{key}={getattr(record, key)}" for key in dict.fromkeys(keys) if hasattr(record, key))
        return f"{line} [{fields}]" if fields else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, then every extra field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", ["levelname", "name", "message"])
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    return value if value and SANE_REQUEST_ID.match(value) else None


class RequestIdMiddleware:
    """Binds a request id for the whole request and logs one access line with it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.monotonic()
        with bind(request_id=request_id):
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            path = SECRET_PATHS.sub("/u/<token>", request.path)
            request_logger.info(
                "%s %s %s",
                request.method,
                path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        return response


# ---------------------------------------------------------------- Celery


def _add_request_id_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = log_context.get().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


_task_tokens: dict[str, Any] = {}


def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    fields: dict[str, Any] = {"task_id": task_id, "task": getattr(task, "name", None)}
    request = getattr(task, "request", None)
    request_id = sane_request_id(getattr(request, TASK_HEADER, None)) or log_context.get().get("request_id")
    if request_id:
        fields["request_id"] = request_id
    if task_id:
        _task_tokens[task_id] = log_context.set({**log_context.get(), **fields})


def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        try:
            log_context.reset(token)
        except ValueError:
            # Set in another context (a pool quirk): clearing is the safe fallback.
            log_context.set({})


def _configure_worker_logging(loglevel: Any = None, **_: Any) -> None:
    """Django's LOGGING (plain or JSON, with the context filter) instead of Celery's own handler.
    `--loglevel` still applies; `--logfile` does not (log to stdout and let the supervisor keep it)."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def connect_celery() -> None:
    from celery import signals

    signals.before_task_publish.connect(_add_request_id_header, weak=False)
    signals.task_prerun.connect(_bind_task, weak=False)
    signals.task_postrun.connect(_unbind_task, weak=False)
    # Connecting a receiver tells Celery to leave logging alone in the worker and in beat.
    signals.setup_logging.connect(_configure_worker_logging, weak=False)
