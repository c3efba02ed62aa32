"""SES events delivered by Amazon SNS: signature verification, subscription confirmation, processing.

Verification follows AWS's "Verifying the signatures of Amazon SNS messages": the canonical string
of the message's fields, an RSA PKCS#1 v1.5 signature with SHA1 (SignatureVersion 1) or SHA256
(SignatureVersion 2), and a signing certificate fetched over HTTPS only from
`https://sns.<region>.amazonaws.com/…`. It is written here with `cryptography` because no
maintained package fits: django-anymail 15.2 does not verify SNS signatures (its SES webhook relies
on basic auth), django-ses's verifier only knows SHA1 and drags in a second email backend, and the
small SNS validator packages are unmaintained or need Python 3.13.

Everything that reaches the network goes through a fetcher (`fetch(url) -> bytes`), injectable so
tests can serve a certificate they generated.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.models import Campaign, Delivery, SesEvent
from contacts.suppression import Suppression
from contacts.unsubscribe import suppress_address
from crm.models import Activity

logger = logging.getLogger(__name__)

Fetcher = Callable[[str], bytes]

# Anchored, lower-case only, no port, no user info: anything else is refused before any request.
CERT_URL_RE = re.compile(
    r"\Ahttps://sns\.[a-z0-9-]{1,40}\.amazonaws\.com/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem\Z"
)
SUBSCRIBE_URL_RE = re.compile(r"\Ahttps://sns\.[a-z0-9-]{1,40}\.amazonaws\.com/\?[^\s#]*\Z")

SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SNS's original scheme, still the default for topics
    "2": hashes.SHA256,
}
MAX_CERT_BYTES = 64 * 1024
# Gmail's line: a campaign whose complaint rate over its last 1,000 sends exceeds 0.3% pauses.
COMPLAINT_WINDOW = 1000
COMPLAINT_LIMIT_PER_MILLE = 3


class SnsRejected(Exception):
    """The message is not one we accept; `status` is the HTTP answer, the message says why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def https_get(url: str) -> bytes:
    """The production fetcher: HTTPS with certificate checks, no redirects, bounded size."""
    response = requests.get(url, timeout=10, allow_redirects=False, stream=True)
    response.raise_for_status()
    body = response.raw.read(MAX_CERT_BYTES + 1, decode_content=True)
    if len(body) > MAX_CERT_BYTES:
        raise ValueError("response too large")
    return body


# The fetcher used when a caller passes none; tests replace it with one serving a test certificate.
default_fetcher: Fetcher = https_get

_cert_cache: dict[str, rsa.RSAPublicKey] = {}
_cert_cache_lock = threading.Lock()


def clear_certificate_cache() -> None:
    with _cert_cache_lock:
        _cert_cache.clear()


def _public_key(url: str, fetch: Fetcher) -> rsa.RSAPublicKey:
    # Only URLs that passed CERT_URL_RE reach here, so the cache cannot be filled by an attacker.
    with _cert_cache_lock:
        cached = _cert_cache.get(url)
    if cached is not None:
        return cached
    try:
        pem = fetch(url)
        key = x509.load_pem_x509_certificate(pem).public_key()
    except Exception as exc:
        logger.warning("SNS signing certificate %s unusable: %s", url, exc)
        raise SnsRejected(403, "bad_certificate", "The signing certificate could not be loaded.") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRejected(403, "bad_certificate", "The signing certificate is not an RSA certificate.")
    with _cert_cache_lock:
        if len(_cert_cache) > 64:
            _cert_cache.clear()
        _cert_cache[url] = key
    return key


def canonical_string(message: dict[str, Any]) -> bytes:
    """The bytes SNS signs: each present field as "Name\\nvalue\\n", in AWS's fixed order."""
    fields = SIGNED_FIELDS[message["Type"]]
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None:
            # Subject is optional on notifications; every other field is required.
            if name == "Subject":
                continue
            raise SnsRejected(400, "invalid", f"The SNS message has no {name}.")
        if not isinstance(value, str):
            raise SnsRejected(400, "invalid", f"The SNS message's {name} is not a string.")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def verify(message: dict[str, Any], *, fetch: Fetcher | None = None) -> None:
    """Raise SnsRejected unless the message is signed by SNS for one of our topics."""
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise SnsRejected(400, "invalid", "Unknown SNS message Type.")
    if message.get("TopicArn") not in settings.SES_SNS_TOPIC_ARNS:
        raise SnsRejected(403, "unknown_topic", "The topic is not in SES_SNS_TOPIC_ARNS.")
    version = message.get("SignatureVersion")
    if version not in DIGESTS:
        raise SnsRejected(403, "bad_signature", "Unsupported SignatureVersion.")
    cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
    if not isinstance(cert_url, str) or not CERT_URL_RE.match(cert_url):
        raise SnsRejected(403, "bad_certificate", "SigningCertURL is not an Amazon SNS HTTPS URL.")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnsRejected(403, "bad_signature", "The signature is not base64.") from exc
    to_sign = canonical_string(message)
    key = _public_key(cert_url, fetch or default_fetcher)
    try:
        key.verify(signature, to_sign, padding.PKCS1v15(), DIGESTS[version]())
    except InvalidSignature as exc:
        raise SnsRejected(403, "bad_signature", "The SNS signature does not match the message.") from exc


@dataclass(frozen=True)
class Handled:
    status: str  # "processed", "duplicate", "confirmed", "unsubscribed"
    event: SesEvent | None = None


def handle_sns_body(body: bytes, *, fetch: Fetcher | None = None) -> Handled:
    """Verify and act on one SNS HTTP POST body. Raises SnsRejected for anything not accepted."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[…" nesting
        raise SnsRejected(400, "invalid", "The body is not JSON.") from exc
    if not isinstance(message, dict):
        raise SnsRejected(400, "invalid", "The body is not an SNS message.")
    verify(message, fetch=fetch)
    kind = message["Type"]
    if kind == "SubscriptionConfirmation":
        confirm_subscription(message, fetch=fetch)
        return Handled("confirmed")
    if kind == "UnsubscribeConfirmation":
        logger.warning("SNS topic %s unsubscribed this endpoint", message.get("TopicArn"))
        return Handled("unsubscribed")
    return process_notification(message)


def confirm_subscription(message: dict[str, Any], *, fetch: Fetcher | None = None) -> None:
    url = message.get("SubscribeURL")
    if not isinstance(url, str) or not SUBSCRIBE_URL_RE.match(url):
        raise SnsRejected(403, "bad_subscribe_url", "SubscribeURL is not an Amazon SNS HTTPS URL.")
    try:
        (fetch or default_fetcher)(url)
    except Exception as exc:
        logger.warning("Could not confirm SNS subscription for %s: %s", message.get("TopicArn"), exc)
        # 502 so SNS sends the confirmation again later.
        raise SnsRejected(502, "confirmation_failed", "Could not confirm the subscription with SNS.") from exc
    logger.info("Confirmed SNS subscription to %s", message.get("TopicArn"))


def _event_type(event: dict[str, Any]) -> str:
    raw = str(event.get("eventType") or event.get("notificationType") or "").replace(" ", "").lower()
    return raw if raw in SesEvent.Type.values else SesEvent.Type.OTHER


def process_notification(message: dict[str, Any]) -> Handled:
    """Record and act on one SES event, exactly once per SNS MessageId."""
    try:
        event = json.loads(message["Message"])
    except ValueError as exc:
        raise SnsRejected(400, "invalid", "The notification's Message is not JSON.") from exc
    if not isinstance(event, dict):
        raise SnsRejected(400, "invalid", "The notification's Message is not an SES event.")
    event_type = _event_type(event)
    mail = event.get("mail") if isinstance(event.get("mail"), dict) else {}
    provider_id = str(mail.get("messageId") or "")[:200]
    delivery = (
        Delivery.objects.select_related("campaign__workspace", "contact", "message")
        .filter(provider_message_id=provider_id)
        .first()
        if provider_id
        else None
    )
    detail_key = {"deliverydelay": "deliveryDelay", "renderingfailure": "failure"}.get(event_type, event_type)
    detail = event.get(detail_key) if isinstance(event.get(detail_key), dict) else {}
    subtype = str(detail.get("bounceType") or detail.get("complaintFeedbackType") or "")[:64]
    try:
        with transaction.atomic():
            record = SesEvent.objects.create(
                sns_message_id=str(message["MessageId"])[:100],
                topic_arn=str(message["TopicArn"])[:256],
                event_type=event_type,
                subtype=subtype,
                provider_message_id=provider_id,
                delivery=delivery,
                workspace=delivery.campaign.workspace if delivery else None,
                payload=event,
                occurred_at=_timestamp(detail.get("timestamp") or mail.get("timestamp")),
            )
            _apply(record, delivery=delivery, detail=detail)
    except IntegrityError:
        # The unique MessageId: SNS delivered this one before and it was processed then.
        if SesEvent.objects.filter(sns_message_id=str(message["MessageId"])[:100]).exists():
            return Handled("duplicate")
        raise
    return Handled("processed", record)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def _recipients(detail: dict[str, Any], key: str) -> list[str]:
    rows = detail.get(key)
    if not isinstance(rows, list):
        return []
    found = [str(row.get("emailAddress") or "").strip() for row in rows if isinstance(row, dict)]
    return [email for email in found if "@" in email]


def _fallback(delivery: Delivery) -> list[str]:
    # SES always names the recipients; if a payload does not, the address we sent to is the one.
    return [delivery.to_email] if "@" in delivery.to_email else []


def _apply(record: SesEvent, *, delivery: Delivery | None, detail: dict[str, Any]) -> None:
    if delivery is None:
        # Not one of our deliveries (a test send from the console, another app on the account):
        # kept for the record, but without a workspace there is nothing to suppress.
        logger.info("SES %s event for unknown message %s", record.event_type, record.provider_message_id)
        return
    workspace = delivery.campaign.workspace
    facts = {"delivery": delivery.pk, "campaign": delivery.campaign_id, "ses_event": record.pk}
    if record.event_type == SesEvent.Type.BOUNCE and record.subtype == "Permanent":
        for email in _recipients(detail, "bouncedRecipients") or _fallback(delivery):
            suppress_address(
                workspace=workspace, email=email, reason=Suppression.Reason.BOUNCE, source="ses", data=facts
            )
    elif record.event_type == SesEvent.Type.COMPLAINT:
        for email in _recipients(detail, "complainedRecipients") or _fallback(delivery):
            suppress_address(
                workspace=workspace, email=email, reason=Suppression.Reason.COMPLAINT, source="ses", data=facts
            )
        pause_for_complaints(campaign=delivery.campaign)
    elif record.event_type in (
        SesEvent.Type.BOUNCE,
        SesEvent.Type.DELIVERY,
        SesEvent.Type.OPEN,
        SesEvent.Type.CLICK,
        SesEvent.Type.DELIVERY_DELAY,
    ):
        # Transient bounces are recorded only: the address may work tomorrow.
        summary = {
            SesEvent.Type.BOUNCE: f"Email bounced ({record.subtype or 'transient'})",
            SesEvent.Type.DELIVERY: "Email delivered",
            SesEvent.Type.OPEN: "Email opened",
            SesEvent.Type.CLICK: "Link clicked",
            SesEvent.Type.DELIVERY_DELAY: "Email delivery delayed",
        }[record.event_type]
        extra = {"link": str(detail.get("link", ""))[:2000]} if record.event_type == SesEvent.Type.CLICK else {}
        Activity.objects.create(
            workspace=workspace,
            contact=delivery.contact,
            kind=Activity.Kind.EMAIL_EVENT,
            summary=f"{summary}: {delivery.message.subject}"[:300],
            actor="ses",
            data={"event": record.event_type, **facts, **extra},
            occurred_at=record.occurred_at or timezone.now(),
        )


def complaint_figures(campaign: Campaign) -> tuple[int, int]:
    """(complaints, sends) over the campaign's last COMPLAINT_WINDOW sent, non-test deliveries."""
    window = list(
        Delivery.objects.counted()
        .filter(campaign=campaign, status=Delivery.Status.SENT)
        .order_by("-sent_at", "-id")
        .values_list("id", flat=True)[:COMPLAINT_WINDOW]
    )
    if not window:
        return 0, 0
    complaints = (
        SesEvent.objects.filter(event_type=SesEvent.Type.COMPLAINT, delivery_id__in=window)
        .values("delivery_id")
        .distinct()
        .count()
    )
    return complaints, len(window)


def pause_for_complaints(*, campaign: Campaign) -> bool:
    """Pause the campaign when its complaint rate exceeds 0.3%; True if this call paused it."""
    complaints, sends = complaint_figures(campaign)
    # Integer comparison: complaints / sends > 3 / 1000, with no float rounding at the threshold.
    if sends == 0 or complaints * 1000 <= COMPLAINT_LIMIT_PER_MILLE * sends:
        return False
    reason = (
        f"Paused automatically on {timezone.now():%Y-%m-%d %H:%M} UTC: {complaints} spam complaints in the last "
        f"{sends} emails sent ({complaints / sends:.2%}), above the 0.3% limit."
    )
    paused = Campaign.objects.filter(pk=campaign.pk, active=True).update(active=False, paused_reason=reason[:300])
    if paused:
        logger.warning("Campaign %s paused: %s", campaign.pk, reason)
    return bool(paused)
