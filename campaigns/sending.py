"""The SES edge: turn claimed deliveries into SES calls and SES answers into outcomes.

Two paths, one contract:
- single: one SES v2 SendEmail (Raw MIME built by Django, sent by django-anymail) per email;
  works against moto and any SES.
- bulk: SES v2 SendBulkEmail with an SES-stored template, up to 50 recipients a call, each with
  its own template data and List-Unsubscribe headers. SES renders the Handlebars template, so
  our CPU cost per email is a few dozen bytes of JSON instead of a MIME build.

Retries inside botocore are switched off (settings.ANYMAIL): a call that may have reached SES is
never repeated behind our back. Every outcome is decided here, explicitly, per delivery.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from anymail.exceptions import (
    AnymailError,
    AnymailInvalidAddress,
    AnymailSerializationError,
    AnymailUnsupportedFeature,
)
from anymail.utils import parse_single_address
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)
from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection

from campaigns import templating
from campaigns.models import Campaign, Delivery, Message, MessageContent

logger = logging.getLogger(__name__)

BULK_MAX = 50
# Answers meaning "SES did not send it, try again later".
RETRY_CODES = {
    "TooManyRequestsException",
    "Throttling",
    "ThrottlingException",
    "LimitExceededException",
    "SendingPausedException",
    "AccountSuspendedException",
    "InternalFailure",
    "ServiceUnavailable",
}
BULK_RETRY_STATUSES = {
    "ACCOUNT_THROTTLED",
    "TRANSIENT_FAILURE",
    "ACCOUNT_DAILY_QUOTA_EXCEEDED",
    "ACCOUNT_SENDING_PAUSED",
    "CONFIGURATION_SET_SENDING_PAUSED",
    "TEMPLATE_NOT_FOUND",
}


# Exceptions raised while building an email, before any request: the email cannot be sent.
BUILD_ERRORS = (AnymailInvalidAddress, AnymailUnsupportedFeature, AnymailSerializationError, BadHeaderError)
ONE_LINE_FIELDS = ("name", "email", "company")


class Outcome(enum.Enum):
    SENT = "sent"
    FAILED = "failed"  # SES refused it for good: do not retry
    RETRY = "retry"  # SES certainly did not send it: safe to queue again
    UNKNOWN = "unknown"  # SES may or may not have sent it: never resend blindly


@dataclass
class Result:
    outcome: Outcome
    message_id: str = ""
    error: str = ""


@dataclass
class Envelope:
    """Everything needed to send one delivery, as plain data."""

    delivery_id: int
    to: str
    data: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def unsubscribe_url(token: str) -> str:
    return f"{settings.SITE_URL}/u/{token}/"


def list_id(campaign: Campaign) -> str:
    domain = settings.LIST_ID_DOMAIN
    label = " ".join(campaign.name.split()).replace('"', "'")[:100]
    return f'"{label}" <campaign-{campaign.pk}.{campaign.workspace.slug}.{domain}>'


def headers_for(*, list_id: str, delivery_id: int, unsubscribe: str) -> dict[str, str]:
    return {
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id,
        "X-Trickle-Delivery": str(delivery_id),
    }


def sample_data(email: str) -> dict[str, Any]:
    """Template data for a send or preview with no contact behind it."""
    return {"name": "", "email": email, "company": "", "attributes": {}}


def template_data(contact_data: dict[str, Any], *, unsubscribe: str) -> dict[str, Any]:
    """The one dict both renderers see: ours (single path) and SES's (ReplacementTemplateData).

    Control characters in the one-line fields are collapsed here, not only when we render the
    subject ourselves: on the bulk path SES renders the subject from this data, and a CR/LF in a
    name must never reach a header there either."""
    data = {**contact_data, "unsubscribe_url": unsubscribe}
    for key in ONE_LINE_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = templating.collapse_controls(data[key])
    return templating.context(data)


def classify(exc: BaseException) -> Result:
    """Map an exception from a send call to an outcome. When in doubt: UNKNOWN, never RETRY."""
    if isinstance(exc, BUILD_ERRORS):
        # Raised while building the request, before anything left the machine: nothing was sent,
        # and sending it again would fail the same way.
        return Result(Outcome.FAILED, error=f"Could not build the email: {type(exc).__name__}: {exc}"[:500])
    cause = exc.__cause__ if isinstance(exc, AnymailError) and exc.__cause__ is not None else exc
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code", "")
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{code}: {cause.response.get('Error', {}).get('Message', '')}"[:500]
        if code in RETRY_CODES or status == 429 or status >= 500:
            return Result(Outcome.RETRY, error=text)
        return Result(Outcome.FAILED, error=text)
    if isinstance(cause, (EndpointConnectionError, ConnectTimeoutError)):
        # No connection was made: the request never reached SES.
        return Result(Outcome.RETRY, error=f"{type(cause).__name__}: {cause}"[:500])
    if isinstance(exc, AnymailError) and exc.__cause__ is None:
        # Anymail's own verdict on a response it parsed, e.g. every bulk entry rejected alike.
        response = getattr(exc, "response", None) or {}
        statuses = {r.get("Status") for r in response.get("BulkEmailEntryResults", [])}
        if statuses and statuses <= BULK_RETRY_STATUSES:
            return Result(Outcome.RETRY, error=str(exc)[:500])
        if statuses:
            return Result(Outcome.FAILED, error=str(exc)[:500])
    # A read timeout or dropped connection after the request went out: SES may have sent it.
    return Result(Outcome.UNKNOWN, error=f"{type(cause).__name__}: {cause}"[:500])


@cache
def _connection(backend: str, endpoint: str | None) -> Any:
    connection = get_connection(backend)
    connection.open()
    return connection


def connection() -> Any:
    """One anymail backend (one boto3 client, one HTTP pool) per process, reused across tasks."""
    return _connection(settings.EMAIL_BACKEND, settings.SES_ENDPOINT_URL)


@cache
def _compiled(content: MessageContent) -> tuple[templating.Template, templating.Template, templating.Template]:
    return (
        templating.compile_template(content.subject),
        templating.compile_template(content.html),
        templating.compile_template(content.text),
    )


def render(content: MessageContent, data: dict[str, Any]) -> tuple[str, str, str]:
    subject, html, text = _compiled(content)
    return templating.render_subject(subject, data), html.render(data, escape=True), text.render(data, escape=False)


def send_single(*, campaign: Campaign, content: MessageContent, envelopes: Sequence[Envelope]) -> dict[int, Result]:
    """One SendEmail (Raw) per envelope, on one shared connection."""
    conn = connection()
    results: dict[int, Result] = {}
    for envelope in envelopes:
        subject, html, text = render(content, envelope.data)
        email = EmailMultiAlternatives(
            subject=subject,
            body=text,
            from_email=campaign.sender,
            to=[envelope.to],
            reply_to=[campaign.reply_to] if campaign.reply_to else None,
            headers=envelope.headers,
            connection=conn,
        )
        email.attach_alternative(html, "text/html")
        try:
            email.send()
        except Exception as exc:
            results[envelope.delivery_id] = classify(exc)
            continue
        # Non-anymail backends (console, locmem) have no status: sent, without a provider id.
        status = getattr(email, "anymail_status", None)
        results[envelope.delivery_id] = Result(Outcome.SENT, message_id=(status and status.message_id) or "")
    return results


def ses_template_name(message: Message, content: MessageContent) -> str:
    return f"trickle-{settings.REDIS_PREFIX}-m{message.pk}-{content.digest}"


_known_templates: set[tuple[str | None, str]] = set()


def ensure_ses_template(*, message: Message, content: MessageContent) -> str:
    """Upload the message's template to SES once per content version; returns its name."""
    name = ses_template_name(message, content)
    key = (settings.SES_ENDPOINT_URL, name)
    if key in _known_templates:
        return name
    subject, html, text = _compiled(content)
    template = {
        "Subject": subject.to_handlebars(escape=False),
        "Html": html.to_handlebars(escape=True),
        "Text": text.to_handlebars(escape=False),
    }
    client = connection().client
    try:
        client.create_email_template(TemplateName=name, TemplateContent=template)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
    _known_templates.add(key)
    return name


def send_bulk(
    *, campaign: Campaign, message: Message, content: MessageContent, envelopes: Sequence[Envelope]
) -> dict[int, Result]:
    """SendBulkEmail in calls of up to 50 destinations, each with its own data and headers.

    The request is built here and handed to anymail's boto3 client (same session, endpoint and
    no-retry settings) rather than through an anymail EmailMessage: anymail parses and re-formats
    every recipient address and merges headers per entry, which cost more CPU than the call itself.
    The payload is the one anymail would send (see docs/benchmarks.md)."""
    results: dict[int, Result] = {}
    try:
        template_name = ensure_ses_template(message=message, content=content)
    except Exception as exc:
        outcome = classify(exc)
        # Creating a template sends nothing: whatever went wrong, the deliveries are safe to retry.
        return {e.delivery_id: Result(Outcome.RETRY, error=outcome.error) for e in envelopes}
    client = connection().client
    common = _bulk_common(campaign, template_name)
    for batch in _batches(envelopes, BULK_MAX):
        params = {
            **common,
            "BulkEmailEntries": [
                {
                    "Destination": {"ToAddresses": [_format_address(e.to)]},
                    "ReplacementEmailContent": {
                        "ReplacementTemplate": {"ReplacementTemplateData": json.dumps(e.data, default=str)}
                    },
                    "ReplacementHeaders": [{"Name": k, "Value": v} for k, v in e.headers.items()],
                }
                for e in batch
            ],
        }
        try:
            response = client.send_bulk_email(**params)
        except Exception as exc:
            result = classify(exc)
            if "TEMPLATE_NOT_FOUND" in result.error or "NotFoundException" in result.error:
                _known_templates.discard((settings.SES_ENDPOINT_URL, template_name))
            results.update({e.delivery_id: result for e in batch})
            continue
        entries = response.get("BulkEmailEntryResults", [])
        if len(entries) != len(batch):
            # Cannot tell which entry is which: SES may have sent any of them.
            error = f"SES answered {len(entries)} results for {len(batch)} destinations"
            results.update({e.delivery_id: Result(Outcome.UNKNOWN, error=error) for e in batch})
            continue
        for envelope, entry in zip(batch, entries, strict=True):
            results[envelope.delivery_id] = _bulk_entry_result(entry)
    return results


def _bulk_common(campaign: Campaign, template_name: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "FromEmailAddress": _format_address(campaign.sender),
        "DefaultContent": {"Template": {"TemplateName": template_name}},
    }
    if campaign.reply_to:
        params["ReplyToAddresses"] = [_format_address(campaign.reply_to)]
    configuration_set = settings.ANYMAIL.get("AMAZON_SES_CONFIGURATION_SET_NAME")
    if configuration_set:
        params["ConfigurationSetName"] = configuration_set
    return params


@lru_cache(maxsize=4096)
def _format_address(address: str) -> str:
    """An address as anymail formats it for SES (RFC 2047 display names, IDNA domains)."""
    if address.isascii() and _PLAIN_ADDRESS.fullmatch(address):
        return address  # the common case, and the same string anymail would produce
    return parse_single_address(address).format(use_rfc2047=True, idna_encode=connection().idna_encode)


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+")


def _bulk_entry_result(entry: dict[str, Any]) -> Result:
    status = entry.get("Status", "")
    if status == "SUCCESS":
        return Result(Outcome.SENT, message_id=entry.get("MessageId", ""))
    error = f"{status}: {entry.get('Error', '')}"[:500]
    if status in BULK_RETRY_STATUSES:
        if status == "TEMPLATE_NOT_FOUND":
            _known_templates.clear()
        return Result(Outcome.RETRY, error=error)
    return Result(Outcome.FAILED, error=error)


def _batches(items: Sequence[Envelope], size: int) -> Iterable[Sequence[Envelope]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send(
    *, campaign: Campaign, message: Message, envelopes: Sequence[Envelope], content: MessageContent | None = None
) -> dict[int, Result]:
    content = content or message.content()
    if settings.SES_BULK:
        return send_bulk(campaign=campaign, message=message, content=content, envelopes=envelopes)
    return send_single(campaign=campaign, content=content, envelopes=envelopes)


__all__ = ["Delivery", "Envelope", "Outcome", "Result", "send"]
