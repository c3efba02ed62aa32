from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from django.test import Client

from campaigns import ses_events
from campaigns.models import Campaign, Delivery, SesEvent
from contacts.models import Contact
from contacts.suppression import Suppression, is_suppressed
from crm.models import Activity, Workspace
from tests.factories import CampaignFactory, DeliveryFactory, MessageFactory

pytestmark = pytest.mark.django_db

TOPIC = "arn:aws:sns:eu-west-1:123456789012:trickle-ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    + TOPIC
    + "&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb718"
)


@dataclass
class Signer:
    """Plays Amazon SNS: a private key, the certificate it publishes, and the signing recipe."""

    key: rsa.RSAPrivateKey
    pem: bytes
    fetched: list[str] = field(default_factory=list)

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if url.startswith("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"):
            return b"<ConfirmSubscriptionResponse/>"
        raise OSError(f"404 {url}")

    def sign(self, message: dict[str, Any], *, version: str = "1", key: rsa.RSAPrivateKey | None = None) -> dict:
        # Written from AWS's documentation independently of the code under test.
        if message["Type"] == "Notification":
            names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        text = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
        digest = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303 - SNS v1 is SHA1
        signature = (key or self.key).sign(text.encode(), padding.PKCS1v15(), digest)
        return {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": CERT_URL,
        }


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sns(sns_key: rsa.RSAPrivateKey, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Signer]:
    settings.SES_SNS_TOPIC_ARNS = [TOPIC]
    signer = Signer(key=sns_key, pem=_certificate(sns_key))
    ses_events.clear_certificate_cache()
    monkeypatch.setattr(ses_events, "default_fetcher", signer.fetch)
    yield signer
    ses_events.clear_certificate_cache()


def notification(event: dict[str, Any], *, message_id: str | None = None, subject: bool = False) -> dict:
    message = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": json.dumps(event),
        "Timestamp": "2026-11-21T10:00:00.000Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject:
        message["Subject"] = "Amazon SES Email Event Notification"
    return message


def ses_event(kind: str, delivery: Delivery | None, **detail: Any) -> dict[str, Any]:
    key = {"Bounce": "bounce", "Complaint": "complaint", "Delivery": "delivery", "Open": "open", "Click": "click"}[kind]
    return {
        "eventType": kind,
        "mail": {
            "timestamp": "2026-11-21T09:59:00.000Z",
            "messageId": delivery.provider_message_id if delivery else "unknown-id",
            "destination": [delivery.to_email if delivery else "x@example.com"],
        },
        key: {"timestamp": "2026-11-21T10:00:00.000Z", **detail},
    }


def post(body: dict[str, Any] | bytes) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    # SNS posts JSON labelled text/plain, with no cookies and no CSRF token.
    return Client(enforce_csrf_checks=True).post("/webhooks/ses/", data=data, content_type="text/plain; charset=utf-8")


@pytest.fixture
def sent(workspace: Workspace) -> Delivery:
    return DeliveryFactory(
        enrollment__campaign__workspace=workspace,
        status=Delivery.Status.SENT,
        provider_message_id="0100018c-ses-message-id-0001",
        sent_at=datetime.now(UTC),
    )


def bounce(delivery: Delivery, bounce_type: str) -> dict[str, Any]:
    return ses_event(
        "Bounce",
        delivery,
        bounceType=bounce_type,
        bounceSubType="General",
        bouncedRecipients=[{"emailAddress": delivery.to_email, "status": "5.1.1"}],
    )


# --- signature verification ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [False, True])
def test_a_correctly_signed_notification_is_accepted(sns: Signer, sent: Delivery, version: str, subject: bool) -> None:
    signed = sns.sign(notification(ses_event("Delivery", sent), subject=subject), version=version)
    response = post(signed)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "processed"}
    assert SesEvent.objects.get().delivery == sent
    assert sns.fetched == [CERT_URL]


def test_a_tampered_body_is_rejected(sns: Signer, sent: Delivery) -> None:
    signed = sns.sign(notification(ses_event("Delivery", sent)))
    signed["Message"] = json.dumps(bounce(sent, "Permanent"))
    response = post(signed)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "bad_signature"
    assert not SesEvent.objects.exists()
    assert not Suppression.objects.exists()


def test_a_signature_from_another_key_is_rejected(sns: Signer, sent: Delivery) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = post(sns.sign(notification(bounce(sent, "Permanent")), key=other))
    assert response.status_code == 403
    assert not Suppression.objects.exists()


def test_a_wrong_signature_version_is_rejected(sns: Signer, sent: Delivery) -> None:
    signed = sns.sign(notification(ses_event("Delivery", sent)))
    signed["SignatureVersion"] = "3"
    assert post(signed).status_code == 403


def test_a_wrong_topic_is_rejected_before_any_fetch(sns: Signer, sent: Delivery) -> None:
    message = notification(bounce(sent, "Permanent"))
    message["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:someone-else"
    response = post(sns.sign(message))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "unknown_topic"
    assert sns.fetched == []
    assert not SesEvent.objects.exists()


@pytest.mark.parametrize(
    "cert_url",
    [
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://evil.example.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example.com/SimpleNotificationService-0123.pem",
        "https://my-bucket.s3.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://evil.sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example.com/SimpleNotificationService-0123.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com/../SimpleNotificationService-0123456789abcdef.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem\n",
        "",
    ],
)
def test_a_certificate_url_outside_amazon_sns_is_never_fetched(sns: Signer, sent: Delivery, cert_url: str) -> None:
    signed = sns.sign(notification(bounce(sent, "Permanent")))
    signed["SigningCertURL"] = cert_url
    response = post(signed)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "bad_certificate"
    assert sns.fetched == []
    assert not Suppression.objects.exists()


def test_the_certificate_is_fetched_once_and_cached(sns: Signer, sent: Delivery) -> None:
    for _ in range(3):
        assert post(sns.sign(notification(ses_event("Open", sent)))).status_code == 200
    assert sns.fetched == [CERT_URL]


@pytest.mark.parametrize(
    "body", [b"not json", b"\xff\xfe", b"[1, 2]", b'{"Type": "Surprise"}', b'{"Type": "Notification"}']
)
def test_malformed_messages_are_client_errors(sns: Signer, body: bytes) -> None:
    response = post(body)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_only_post_is_allowed(sns: Signer) -> None:
    assert Client().get("/webhooks/ses/").status_code == 405


def test_an_oversized_body_is_refused(sns: Signer) -> None:
    assert post(b"x" * (600 * 1024)).status_code == 413


# --- subscription ----------------------------------------------------------------------------


def subscription(subscribe_url: str = SUBSCRIBE_URL) -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a7",
        "TopicArn": TOPIC,
        "Message": (
            f"You have chosen to subscribe to the topic {TOPIC}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-21T10:00:00.000Z",
    }


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_subscription_is_confirmed(sns: Signer, version: str) -> None:
    response = post(sns.sign(subscription(), version=version))
    assert response.status_code == 200
    assert response.json() == {"status": "confirmed"}
    assert sns.fetched == [CERT_URL, SUBSCRIBE_URL]


def test_a_subscribe_url_outside_amazon_sns_is_never_visited(sns: Signer) -> None:
    response = post(sns.sign(subscription("https://evil.example.com/?Action=ConfirmSubscription")))
    assert response.status_code == 403
    assert sns.fetched == [CERT_URL]


def test_a_subscription_for_another_topic_is_not_confirmed(sns: Signer) -> None:
    message = subscription()
    message["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:someone-else"
    assert post(sns.sign(message)).status_code == 403
    assert sns.fetched == []


# --- processing --------------------------------------------------------------------------------


def test_a_duplicate_message_is_processed_once(sns: Signer, sent: Delivery) -> None:
    signed = sns.sign(
        notification(ses_event("Complaint", sent, complainedRecipients=[{"emailAddress": sent.to_email}]))
    )
    first, second = post(signed), post(signed)
    assert first.status_code == second.status_code == 200
    assert second.json() == {"status": "duplicate"}
    assert SesEvent.objects.count() == 1
    assert Activity.objects.filter(kind=Activity.Kind.COMPLAINED).count() == 1


def test_a_permanent_bounce_suppresses_the_address(sns: Signer, sent: Delivery) -> None:
    assert post(sns.sign(notification(bounce(sent, "Permanent")))).status_code == 200
    workspace = sent.campaign.workspace
    assert is_suppressed(workspace, sent.to_email)
    assert Suppression.objects.get().reason == Suppression.Reason.BOUNCE
    contact = Contact.objects.get(pk=sent.contact_id)
    assert contact.status == Contact.Status.UNSUBSCRIBED
    assert Activity.objects.filter(contact=contact, kind=Activity.Kind.BOUNCED).exists()


def test_a_transient_bounce_is_recorded_but_suppresses_nothing(sns: Signer, sent: Delivery) -> None:
    assert post(sns.sign(notification(bounce(sent, "Transient")))).status_code == 200
    assert not Suppression.objects.exists()
    event = SesEvent.objects.get()
    assert (event.event_type, event.subtype, event.delivery) == ("bounce", "Transient", sent)
    assert Contact.objects.get(pk=sent.contact_id).status == Contact.Status.SUBSCRIBED
    assert Activity.objects.filter(contact_id=sent.contact_id, kind=Activity.Kind.EMAIL_EVENT).exists()


def test_a_complaint_suppresses_and_is_recorded_as_a_complaint(sns: Signer, sent: Delivery) -> None:
    event = ses_event(
        "Complaint", sent, complaintFeedbackType="abuse", complainedRecipients=[{"emailAddress": sent.to_email}]
    )
    assert post(sns.sign(notification(event))).status_code == 200
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINT
    assert Activity.objects.filter(contact_id=sent.contact_id, kind=Activity.Kind.COMPLAINED).count() == 1
    assert SesEvent.objects.get().subtype == "abuse"


def test_a_complaint_after_an_unsubscribe_upgrades_the_reason(sns: Signer, sent: Delivery) -> None:
    from contacts.unsubscribe import unsubscribe

    unsubscribe(contact=sent.contact, source="one-click")  # deletes the contact: the ledger stays
    event = ses_event("Complaint", sent, complainedRecipients=[{"emailAddress": sent.to_email}])
    assert post(sns.sign(notification(event))).status_code == 200
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINT


@pytest.mark.parametrize(("kind", "detail"), [("Delivery", {}), ("Open", {}), ("Click", {"link": "https://x.test/"})])
def test_delivery_open_and_click_are_recorded_on_the_delivery_and_timeline(
    sns: Signer, sent: Delivery, kind: str, detail: dict[str, Any]
) -> None:
    assert post(sns.sign(notification(ses_event(kind, sent, **detail)))).status_code == 200
    assert list(sent.ses_events.values_list("event_type", flat=True)) == [kind.lower()]
    activity = Activity.objects.get(contact_id=sent.contact_id)
    assert activity.kind == Activity.Kind.EMAIL_EVENT
    assert activity.data["delivery"] == sent.pk
    assert not Suppression.objects.exists()


def test_an_event_for_an_unknown_message_is_recorded_only(sns: Signer, workspace: Workspace) -> None:
    assert post(sns.sign(notification(ses_event("Bounce", None, bounceType="Permanent")))).status_code == 200
    assert SesEvent.objects.get().delivery is None
    assert not Suppression.objects.exists()


# --- complaint-rate auto-pause -----------------------------------------------------------------


def _sent_deliveries(campaign: Campaign, count: int) -> list[Delivery]:
    message = MessageFactory(campaign=campaign)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    Delivery.objects.bulk_create(
        Delivery(
            campaign=campaign,
            message=message,
            to_email=f"p{i}@example.com",
            status=Delivery.Status.SENT,
            provider_message_id=f"msg-{campaign.pk}-{i}",
            sent_at=start + timedelta(seconds=i),
        )
        for i in range(count)
    )
    return list(Delivery.objects.filter(campaign=campaign).order_by("sent_at"))


def _complain(deliveries: list[Delivery]) -> None:
    SesEvent.objects.bulk_create(
        SesEvent(
            sns_message_id=str(uuid.uuid4()),
            topic_arn=TOPIC,
            event_type=SesEvent.Type.COMPLAINT,
            provider_message_id=d.provider_message_id,
            delivery=d,
        )
        for d in deliveries
    )


@pytest.mark.parametrize(("complaints", "paused"), [(0, False), (3, False), (4, True)])
def test_a_campaign_pauses_only_above_a_three_per_mille_complaint_rate(
    workspace: Workspace, complaints: int, paused: bool
) -> None:
    campaign = CampaignFactory(workspace=workspace, active=True)
    deliveries = _sent_deliveries(campaign, 1000)
    _complain(deliveries[-complaints:] if complaints else [])

    assert ses_events.pause_for_complaints(campaign=campaign) is paused

    campaign.refresh_from_db()
    assert campaign.active is not paused
    if paused:
        assert "4 spam complaints in the last 1000 emails sent (0.40%)" in campaign.paused_reason
    else:
        assert campaign.paused_reason == ""


def test_complaints_older_than_the_last_thousand_sends_do_not_count(workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace, active=True)
    deliveries = _sent_deliveries(campaign, 1004)
    _complain(deliveries[:4])  # the four oldest: outside the window
    assert ses_events.complaint_figures(campaign) == (0, 1000)
    assert not ses_events.pause_for_complaints(campaign=campaign)


def test_a_complaint_arriving_by_webhook_pauses_the_campaign_over_the_line(sns: Signer, workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace, active=True)
    deliveries = _sent_deliveries(campaign, 1000)
    _complain(deliveries[:3])
    event = ses_event("Complaint", deliveries[500], complainedRecipients=[{"emailAddress": deliveries[500].to_email}])

    assert post(sns.sign(notification(event))).status_code == 200

    campaign.refresh_from_db()
    assert campaign.active is False
    assert "above the 0.3% limit" in campaign.paused_reason
