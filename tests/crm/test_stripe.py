from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from contacts.models import Contact
from crm.models import Activity, Charge, Payment, RecurringPlan, StripeEvent, Workspace
from tests.factories import ContactFactory, RecurringPlanFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

SECRET = "whsec_test_acme"
OTHER_SECRET = "whsec_test_globex"
URL = "/webhooks/stripe/acme/"


def stripe_signature(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The header as Stripe documents it: t=<unix time>,v1=<hex HMAC-SHA256 of "t.payload">."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(kind: str, obj: dict[str, Any], *, event_id: str = "evt_1") -> bytes:
    return json.dumps(
        {"id": event_id, "object": "event", "type": kind, "created": 1780000000, "data": {"object": obj}}
    ).encode()


@pytest.fixture
def acme(workspace: Workspace) -> Workspace:
    workspace.stripe_webhook_secret = SECRET
    workspace.save()
    return workspace


@pytest.fixture
def globex(other_workspace: Workspace) -> Workspace:
    other_workspace.stripe_webhook_secret = OTHER_SECRET
    other_workspace.save()
    return other_workspace


@pytest.fixture
def post(client: Client, django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    def _post(payload: bytes, *, secret: str = SECRET, url: str = URL, header: str | None = None) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                url,
                data=payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header if header is not None else stripe_signature(payload, secret),
            )

    return _post


def checkout(**extra: Any) -> dict[str, Any]:
    return {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": 5000000,
        "currency": "eur",
        "customer": "cus_1",
        "customer_details": {"email": "Ana@Studio.example.com", "name": "Ana"},
        "payment_intent": "pi_1",
        "metadata": {},
        **extra,
    }


def test_a_signed_checkout_creates_the_contact_records_the_deposit_and_moves_the_status(
    acme: Workspace, post: Callable[..., Any]
) -> None:
    response = post(event("checkout.session.completed", checkout()))

    assert response.status_code == 200
    contact = Contact.objects.get(workspace=acme, email_key="ana@studio.example.com")
    assert contact.name == "Ana" and contact.stripe_customer_id == "cus_1" and contact.source == "stripe"
    payment = Payment.objects.get(contact=contact)
    assert (payment.amount, payment.currency, payment.kind, payment.provider, payment.provider_reference) == (
        Decimal("50000.000"),
        "EUR",
        "deposit",
        "stripe",
        "pi_1",
    )
    assert contact.lifecycle_status == "deposit_paid"
    stored = StripeEvent.objects.get(workspace=acme, event_id="evt_1")
    assert stored.processed_at is not None and "recorded" in stored.outcome


def test_a_tampered_body_is_refused(acme: Workspace, post: Callable[..., Any]) -> None:
    payload = event("checkout.session.completed", checkout())
    header = stripe_signature(payload, SECRET)

    response = post(payload.replace(b"5000000", b"9000000"), header=header)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not StripeEvent.objects.exists() and not Payment.objects.exists()


def test_a_stale_signature_is_refused(acme: Workspace, post: Callable[..., Any]) -> None:
    payload = event("checkout.session.completed", checkout())

    response = post(payload, header=stripe_signature(payload, SECRET, timestamp=int(time.time()) - 301))

    assert response.status_code == 400
    assert "tolerance" in response.json()["error"]["message"]
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize("header", ["", "garbage", "t=notanumber,v1=abc", "t=1,v0=abc"])
def test_a_missing_or_garbled_signature_header_is_refused(
    acme: Workspace, post: Callable[..., Any], header: str
) -> None:
    assert post(event("invoice.paid", {}), header=header).status_code == 400


@pytest.mark.parametrize(
    "payload", [b"not json", b"\xff\xfe", b"[1, 2]", b'{"id": "evt_1"}', b'{"id": "evt_1", "type": "x", "data": 3}']
)
def test_a_signed_but_malformed_body_is_a_400_not_a_500(
    acme: Workspace, post: Callable[..., Any], payload: bytes
) -> None:
    response = post(payload)

    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"malformed", "invalid_signature"}
    assert not StripeEvent.objects.exists()


def test_a_replayed_event_is_answered_200_and_not_processed_again(acme: Workspace, post: Callable[..., Any]) -> None:
    payload = event("checkout.session.completed", checkout())
    first = post(payload)
    Payment.objects.all().delete()  # were it processed again, the payment would come back

    second = post(payload)

    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True
    assert StripeEvent.objects.count() == 1
    assert not Payment.objects.exists()


def test_a_secret_only_opens_its_own_workspace(acme: Workspace, globex: Workspace, post: Callable[..., Any]) -> None:
    payload = event("checkout.session.completed", checkout())

    assert post(payload, secret=OTHER_SECRET, url=URL).status_code == 400
    assert post(payload, secret=SECRET, url="/webhooks/stripe/globex/").status_code == 400
    assert post(payload, secret=SECRET, url="/webhooks/stripe/nope/").status_code == 400
    assert not StripeEvent.objects.exists()

    assert post(payload, secret=OTHER_SECRET, url="/webhooks/stripe/globex/").status_code == 200
    assert Contact.objects.get().workspace == globex


def test_the_bare_endpoint_finds_the_workspace_by_its_secret(
    acme: Workspace, globex: Workspace, post: Callable[..., Any]
) -> None:
    assert (
        post(event("checkout.session.completed", checkout()), secret=OTHER_SECRET, url="/webhooks/stripe/").status_code
        == 200
    )

    assert StripeEvent.objects.get().workspace == globex
    assert Contact.objects.get().workspace == globex


def test_a_workspace_without_a_secret_accepts_nothing(workspace: Workspace, post: Callable[..., Any]) -> None:
    assert post(event("invoice.paid", {}), secret="").status_code == 400


def test_only_post_is_allowed(acme: Workspace, client: Client) -> None:
    assert client.get(URL).status_code == 405


def invoice(**extra: Any) -> dict[str, Any]:
    return {
        "id": "in_1",
        "object": "invoice",
        "number": "ACME-0001",
        "customer": "cus_9",
        "customer_email": "bo@saas.example.com",
        "customer_name": "Bo",
        "amount_paid": 4900,
        "currency": "usd",
        "status_transitions": {"paid_at": 1780000100},
        "parent": {"subscription_details": {"subscription": "sub_1"}},
        "lines": {"data": [{"price": {"recurring": {"interval": "year", "interval_count": 1}}}]},
        **extra,
    }


def test_a_paid_subscription_invoice_records_charge_payment_and_plan(acme: Workspace, post: Callable[..., Any]) -> None:
    assert post(event("invoice.paid", invoice())).status_code == 200

    contact = Contact.objects.get(workspace=acme, email_key="bo@saas.example.com")
    payment = Payment.objects.get(contact=contact)
    assert (payment.amount, payment.kind, payment.provider_reference) == (Decimal("49.00"), "subscription", "in_1")
    assert Charge.objects.get(contact=contact).amount == Decimal("49.00")
    assert contact.balances()["USD"].pending == Decimal("0")
    plan = RecurringPlan.objects.get(contact=contact)
    assert (plan.interval, plan.provider_reference, plan.ended_at) == ("year", "sub_1", None)


def test_a_refund_is_a_negative_payment_that_follows_partial_refunds(acme: Workspace, post: Callable[..., Any]) -> None:
    post(event("checkout.session.completed", checkout()))
    charge = {
        "id": "ch_1",
        "object": "charge",
        "customer": "cus_1",
        "amount_refunded": 1000000,
        "currency": "eur",
        "billing_details": {"email": None},
    }

    post(event("charge.refunded", charge, event_id="evt_2"))
    post(event("charge.refunded", {**charge, "amount_refunded": 1500000}, event_id="evt_3"))

    contact = Contact.objects.get(email_key="ana@studio.example.com")
    refund = Payment.objects.get(contact=contact, kind="refund")
    assert refund.amount == Decimal("-15000.00")
    assert contact.balances()["EUR"].paid == Decimal("35000.00")
    # The amount change is in the audit history, attributed to Stripe.
    assert [(h.amount, h.history_change_reason) for h in refund.history.order_by("history_date")] == [
        (Decimal("-10000.000"), "stripe"),
        (Decimal("-15000.000"), "stripe"),
    ]


def test_a_deleted_subscription_ends_the_plan_and_says_so_on_the_timeline(
    acme: Workspace, post: Callable[..., Any]
) -> None:
    plan = RecurringPlanFactory(contact__workspace=acme, provider="stripe", provider_reference="sub_7")

    post(event("customer.subscription.deleted", {"id": "sub_7", "object": "subscription", "ended_at": 1780000000}))

    plan.refresh_from_db()
    assert plan.ended_at is not None
    assert Activity.objects.get(contact=plan.contact, kind="payment").summary.startswith("Subscription cancelled")


def test_an_event_without_an_email_is_stored_and_marked_ignored(acme: Workspace, post: Callable[..., Any]) -> None:
    response = post(event("checkout.session.completed", checkout(customer=None, customer_details={})))

    assert response.status_code == 200
    assert StripeEvent.objects.get().outcome == "ignored: no email or known customer"
    assert not Contact.objects.exists()


def test_unhandled_types_are_stored_and_ignored(acme: Workspace, post: Callable[..., Any]) -> None:
    assert post(event("customer.created", {"id": "cus_1"})).status_code == 200

    assert StripeEvent.objects.get().outcome == "ignored: not handled"


def test_an_existing_contact_is_matched_by_email_in_any_case(acme: Workspace, post: Callable[..., Any]) -> None:
    known = ContactFactory(workspace=acme, email="ana@studio.example.com", name="Ana Known")
    WorkspaceFactory(slug="third")
    ContactFactory(workspace=WorkspaceFactory(slug="fourth"), email="ana@studio.example.com")

    post(event("checkout.session.completed", checkout()))

    assert Payment.objects.get().contact == known
    assert Contact.objects.filter(workspace=acme).count() == 1


def test_a_processing_failure_is_kept_on_the_event_and_the_answer_is_still_200(
    acme: Workspace, post: Callable[..., Any]
) -> None:
    response = post(event("invoice.paid", invoice(currency="dollars")))

    assert response.status_code == 200
    stored = StripeEvent.objects.get()
    assert stored.processed_at is None and stored.outcome.startswith("failed:")
