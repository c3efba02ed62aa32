"""Stripe webhooks: verify, store once, answer fast; a Celery task applies the event afterwards.

Each workspace has its own endpoint, `/webhooks/stripe/<workspace-slug>/`, and its own signing
secret (`Workspace.stripe_webhook_secret`). The bare `/webhooks/stripe/` tries every configured
secret, for a single-workspace install that wants the short URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from contacts.models import Contact
from contacts.normalize import InvalidValue
from crm import services
from crm.errors import error_body
from crm.models import (
    Activity,
    Charge,
    Payment,
    Provider,
    RecurringPlan,
    StripeEvent,
    Workspace,
    from_minor_units,
    validate_currency,
)

logger = logging.getLogger(__name__)

# Stripe's own default: a signed request older than five minutes is refused (replay protection).
SIGNATURE_TOLERANCE_SECONDS = 300
ACTOR = "stripe"


class WebhookRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def verify(*, payload: bytes, sig_header: str, workspaces: QuerySet[Workspace]) -> tuple[Workspace, dict[str, Any]]:
    """The workspace whose secret signed the payload, and the event as a dict.

    Raises WebhookRejected for a bad, stale or missing signature and for a malformed body."""
    last_error = "No Stripe webhook secret is configured for this endpoint."
    for workspace in workspaces.exclude(stripe_webhook_secret=""):
        try:
            stripe.Webhook.construct_event(
                payload, sig_header, workspace.stripe_webhook_secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            last_error = str(exc)
            continue
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Signed by the right secret but not a JSON event (UnicodeDecodeError is a ValueError).
            raise WebhookRejected("malformed", f"The body is not a Stripe event: {exc}") from exc
        event = json.loads(payload)
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)
        ):
            raise WebhookRejected("malformed", "The event needs an id, a type and data.object.")
        return workspace, event
    raise WebhookRejected("invalid_signature", last_error)


def store_event(*, workspace: Workspace, event: dict[str, Any]) -> tuple[StripeEvent, bool]:
    """Store a verified event once and enqueue its processing after commit. A replay (same event
    id for the workspace) returns the stored row with created False and enqueues nothing."""
    from crm.tasks import process_stripe_event

    try:
        with transaction.atomic():
            stored = StripeEvent.objects.create(
                workspace=workspace, event_id=event["id"][:255], type=event["type"][:100], payload=event
            )
    except IntegrityError:
        return StripeEvent.objects.get(workspace=workspace, event_id=event["id"][:255]), False
    transaction.on_commit(lambda: process_stripe_event.delay(stored.pk))
    return stored, True


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest, slug: str | None = None) -> JsonResponse:
    workspaces = Workspace.objects.all() if slug is None else Workspace.objects.filter(slug=slug)
    try:
        workspace, event = verify(
            payload=request.body, sig_header=request.headers.get("Stripe-Signature", ""), workspaces=workspaces
        )
    except WebhookRejected as exc:
        return JsonResponse(error_body(exc.code, exc.message), status=400)
    stored, created = store_event(workspace=workspace, event=event)
    return JsonResponse({"received": stored.event_id, "duplicate": not created})


# Processing (in the Celery task)


def process_event(*, event: StripeEvent) -> str:
    """Apply a stored event once; returns (and stores) what it did. Safe to call twice."""
    with transaction.atomic():
        locked = StripeEvent.objects.select_for_update().select_related("workspace").get(pk=event.pk)
        if locked.processed_at is not None:
            return locked.outcome
        handler = HANDLERS.get(locked.type)
        obj = locked.payload["data"]["object"]
        outcome = handler(locked.workspace, obj, _event_time(locked.payload)) if handler else "ignored: not handled"
        locked.processed_at = timezone.now()
        locked.outcome = outcome
        locked.save(update_fields=["processed_at", "outcome"])
        return outcome


def _event_time(payload: dict[str, Any]) -> datetime:
    created = payload.get("created")
    return datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) else timezone.now()


def _timestamp(value: Any, default: datetime) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC) if isinstance(value, int) else default


def _id(value: Any) -> str:
    """Stripe sends a related object as its id, or as the object when expanded."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else ""


def _match_contact(workspace: Workspace, *, email: str | None, customer: str, name: str = "") -> Contact | None:
    """The contact by Stripe customer id, else by email (created when new)."""
    if customer:
        known = Contact.objects.filter(workspace=workspace, stripe_customer_id=customer).first()
        if known is not None:
            return known
    if not email:
        return None
    try:
        contact, _ = services.contact_for_email(workspace=workspace, email=email, name=name or "")
    except InvalidValue:
        return None
    if customer and contact.stripe_customer_id != customer:
        contact.stripe_customer_id = customer
        contact.save(update_fields=["stripe_customer_id", "updated_at"])
    return contact


def _amount(obj: dict[str, Any], field: str) -> tuple[Any, str]:
    currency = str(obj.get("currency") or "").upper()
    validate_currency(currency)
    return from_minor_units(int(obj.get(field) or 0), currency), currency


def _checkout_completed(workspace: Workspace, obj: dict[str, Any], at: datetime) -> str:
    if obj.get("payment_status") != "paid":
        return f"ignored: payment_status {obj.get('payment_status')}"
    details = obj.get("customer_details") or {}
    contact = _match_contact(
        workspace,
        email=details.get("email") or obj.get("customer_email"),
        customer=_id(obj.get("customer")),
        name=details.get("name") or "",
    )
    if contact is None:
        return "ignored: no email or known customer"
    amount, currency = _amount(obj, "amount_total")
    if obj.get("mode") == "subscription":
        # The money itself arrives as invoice.paid: recording it here too would count it twice.
        _upsert_plan(workspace, contact, _id(obj.get("subscription")), amount, currency, None, at)
        return f"plan recorded for {contact.email}"
    kind = (obj.get("metadata") or {}).get("trickle_kind")
    if kind not in (Payment.Kind.DEPOSIT, Payment.Kind.INVOICE):
        kind = Payment.Kind.DEPOSIT
    payment, created = services.record_payment(
        contact=contact,
        amount=amount,
        currency=currency,
        kind=kind,
        provider=Provider.STRIPE,
        provider_reference=_id(obj.get("payment_intent")) or _id(obj.get("id")),
        paid_at=at,
        description="Stripe Checkout",
        actor=ACTOR,
    )
    return f"{'recorded' if created else 'already had'} {payment.amount} {currency} for {contact.email}"


def _invoice_subscription(obj: dict[str, Any]) -> str:
    # Older API versions put the subscription on the invoice, newer ones under parent.
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    return _id(obj.get("subscription")) or _id(parent.get("subscription"))


def _invoice_interval(obj: dict[str, Any]) -> str | None:
    for line in (obj.get("lines") or {}).get("data") or []:
        recurring = (line.get("price") or {}).get("recurring") or line.get("plan") or {}
        interval, count = recurring.get("interval"), recurring.get("interval_count") or 1
        if interval == "month" and count == 3:
            return RecurringPlan.Interval.QUARTER
        if interval in ("week", "month", "year"):
            return interval
    return None


def _invoice_paid(workspace: Workspace, obj: dict[str, Any], at: datetime) -> str:
    contact = _match_contact(
        workspace, email=obj.get("customer_email"), customer=_id(obj.get("customer")), name=obj.get("customer_name")
    )
    if contact is None:
        return "ignored: no email or known customer"
    amount, currency = _amount(obj, "amount_paid")
    if amount <= 0:
        return "ignored: nothing paid"
    invoice_id = _id(obj.get("id"))
    paid_at = _timestamp((obj.get("status_transitions") or {}).get("paid_at"), at)
    subscription = _invoice_subscription(obj)
    due = obj.get("due_date")
    # The invoice is what was owed and the payment settles it: the contact's balance stays true.
    Charge.objects.get_or_create(
        workspace=workspace,
        provider=Provider.STRIPE,
        provider_reference=invoice_id,
        defaults={
            "contact": contact,
            "amount": amount,
            "currency": currency,
            "description": f"Stripe invoice {obj.get('number') or invoice_id}",
            "due_on": date.fromtimestamp(due) if isinstance(due, int) else paid_at.date(),
        },
    )
    _payment, created = services.record_payment(
        contact=contact,
        amount=amount,
        currency=currency,
        kind=Payment.Kind.SUBSCRIPTION if subscription else Payment.Kind.INVOICE,
        provider=Provider.STRIPE,
        provider_reference=invoice_id,
        paid_at=paid_at,
        description=f"Stripe invoice {obj.get('number') or invoice_id}",
        actor=ACTOR,
    )
    if subscription:
        _upsert_plan(workspace, contact, subscription, amount, currency, _invoice_interval(obj), at)
    return f"{'recorded' if created else 'already had'} {amount} {currency} for {contact.email}"


def _charge_refunded(workspace: Workspace, obj: dict[str, Any], at: datetime) -> str:
    billing = obj.get("billing_details") or {}
    contact = _match_contact(
        workspace, email=billing.get("email") or obj.get("receipt_email"), customer=_id(obj.get("customer"))
    )
    if contact is None:
        return "ignored: no email or known customer"
    refunded, currency = _amount(obj, "amount_refunded")
    if refunded <= 0:
        return "ignored: nothing refunded"
    # amount_refunded is the running total over partial refunds, so one row per charge holds it.
    reference = f"{_id(obj.get('id'))}:refunds"
    payment, created = services.record_payment(
        contact=contact,
        amount=-refunded,
        currency=currency,
        kind=Payment.Kind.REFUND,
        provider=Provider.STRIPE,
        provider_reference=reference,
        paid_at=at,
        description="Stripe refund",
        actor=ACTOR,
    )
    if not created and payment.amount != -refunded:
        payment.amount = -refunded
        payment._change_reason = ACTOR  # type: ignore[attr-defined]
        payment.save(update_fields=["amount"])
    return f"refund of {refunded} {currency} for {contact.email}"


def _subscription_deleted(workspace: Workspace, obj: dict[str, Any], at: datetime) -> str:
    plan = (
        RecurringPlan.objects.filter(
            workspace=workspace, provider=Provider.STRIPE, provider_reference=_id(obj.get("id"))
        )
        .select_related("contact")
        .first()
    )
    if plan is None:
        return "ignored: unknown subscription"
    if plan.ended_at is None:
        plan.ended_at = _timestamp(obj.get("ended_at") or obj.get("canceled_at"), at)
        plan.save(update_fields=["ended_at"])
        Activity.objects.create(
            workspace=workspace,
            contact=plan.contact,
            kind=Activity.Kind.PAYMENT,
            summary=f"Subscription cancelled ({plan.amount} {plan.currency} every {plan.interval})",
            data={"subscription": plan.provider_reference},
            actor=ACTOR,
            occurred_at=plan.ended_at,
        )
    return f"plan ended for {plan.contact.email}"


def _upsert_plan(
    workspace: Workspace,
    contact: Contact,
    reference: str,
    amount: Any,
    currency: str,
    interval: str | None,
    at: datetime,
) -> None:
    if not reference:
        return
    plan, created = RecurringPlan.objects.get_or_create(
        workspace=workspace,
        provider=Provider.STRIPE,
        provider_reference=reference,
        defaults={
            "contact": contact,
            "amount": amount,
            "currency": currency,
            "interval": interval or RecurringPlan.Interval.MONTH,
            "started_at": at,
        },
    )
    if not created and interval and plan.interval != interval:
        plan.interval = interval
        plan.save(update_fields=["interval"])


HANDLERS: dict[str, Callable[[Workspace, dict[str, Any], datetime], str]] = {
    "checkout.session.completed": _checkout_completed,
    "invoice.paid": _invoice_paid,
    "charge.refunded": _charge_refunded,
    "customer.subscription.deleted": _subscription_deleted,
}
