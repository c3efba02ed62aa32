"""The customer record's workflows: pipeline status, notes, money, missed payments, the timeline and
the workspace summary. Keyword-only arguments; callers pass who or what acts (`actor`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, Max, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns.models import Delivery
from contacts.models import Contact
from contacts.normalize import clean_email
from crm.models import Activity, Charge, Payment, RecurringPlan, Workspace, balances

# A user (the admin) or a label for a machine: "stripe", "api:trk_1234", "form:pricing_wizard".
Actor = AbstractBaseUser | str

PLAN_PERIODS: dict[str, relativedelta] = {
    RecurringPlan.Interval.WEEK: relativedelta(weeks=1),
    RecurringPlan.Interval.MONTH: relativedelta(months=1),
    RecurringPlan.Interval.QUARTER: relativedelta(months=3),
    RecurringPlan.Interval.YEAR: relativedelta(years=1),
}
TIMELINE_PAGE_SIZE = 25
SUMMARY_WINDOW = timedelta(days=30)


def actor_name(actor: Actor) -> str:
    if isinstance(actor, str):
        return actor[:100]
    return actor.get_username()[:100]


def _attribute_history(instance: models.Model, actor: Actor) -> None:
    """Make the next audit-history row of `instance` name who did it."""
    if isinstance(actor, str):
        instance._change_reason = actor[:100]  # type: ignore[attr-defined]
    else:
        instance._history_user = actor  # type: ignore[attr-defined]


# Pipeline status


def change_status(*, contact: Contact, to: str, actor: Actor) -> Activity | None:
    """Move a contact to another pipeline status and record the change (from → to, who, when).

    Raises ValidationError naming `lifecycle_status` for a slug not in the workspace's list.
    Returns None, recording nothing, when the contact already has that status."""
    workspace = contact.workspace
    if to not in workspace.status_slugs:
        choices = ", ".join(workspace.status_slugs)
        raise ValidationError({"lifecycle_status": f"'{to}' is not one of: {choices}."})
    with transaction.atomic():
        # The row's current value, not the caller's copy: two editors must not both log "lead → x".
        current = Contact.objects.select_for_update().values_list("lifecycle_status", flat=True).get(pk=contact.pk)
        if current == to:
            contact.lifecycle_status = to
            return None
        contact.lifecycle_status = to
        _attribute_history(contact, actor)
        contact.save(update_fields=["lifecycle_status", "updated_at"])
        return Activity.objects.create(
            workspace=workspace,
            contact=contact,
            kind=Activity.Kind.STATUS_CHANGE,
            summary=f"Status: {workspace.status_label(current)} → {workspace.status_label(to)}",
            data={"from": current, "to": to},
            actor=actor_name(actor),
        )


def advance_status_on_payment(*, contact: Contact, actor: Actor) -> Activity | None:
    """A paid payment moves a contact still earlier in the pipeline to the workspace's
    `status_on_payment`; it never moves anyone backwards."""
    workspace = contact.workspace
    target = workspace.status_on_payment
    if not target or target not in workspace.status_slugs:
        return None
    if workspace.status_position(contact.lifecycle_status) >= workspace.status_position(target):
        return None
    return change_status(contact=contact, to=target, actor=actor)


def add_interaction(
    *, contact: Contact, kind: str, text: str, actor: Actor, occurred_at: datetime | None = None
) -> Activity:
    """Put a note or a call on the contact's timeline."""
    if kind not in (Activity.Kind.NOTE, Activity.Kind.CALL):
        raise ValidationError({"kind": "Choose a note or a call."})
    if not text.strip():
        raise ValidationError({"summary": "Write what was said."})
    return Activity.objects.create(
        workspace_id=contact.workspace_id,
        contact=contact,
        kind=kind,
        summary=text.strip()[:300],
        data={"text": text.strip()} if len(text.strip()) > 300 else {},
        actor=actor_name(actor),
        occurred_at=occurred_at or timezone.now(),
    )


def contact_for_email(
    *, workspace: Workspace, email: str, name: str = "", source: str = "stripe"
) -> tuple[Contact, bool]:
    """The workspace's contact with this email, created when new. Returns (contact, created).

    A stop-gap for the Stripe webhook: the contact API's upsert is the one shared path and the
    coordinator points this at it when merging. Raises contacts.normalize.InvalidValue for a
    malformed address."""
    address = clean_email(email)
    existing = Contact.objects.for_email(address).filter(workspace=workspace).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            contact = Contact(workspace=workspace, email=address, name=name[:200], source=source)
            _attribute_history(contact, source)
            contact.save()
            return contact, True
    except IntegrityError:
        # Created by a concurrent request between the look-up and the insert.
        return Contact.objects.for_email(address).get(workspace=workspace), False


# Money


def record_payment(
    *,
    contact: Contact,
    amount: Decimal,
    currency: str,
    kind: str,
    provider: str,
    actor: Actor,
    provider_reference: str = "",
    paid_at: datetime | None = None,
    description: str = "",
) -> tuple[Payment, bool]:
    """Record money received (positive) or refunded (kind refund, negative amount).

    Idempotent on (provider, provider_reference) when a reference is given: a second call returns
    the first row with created False, so a replayed webhook never counts money twice."""
    payment = Payment(
        workspace_id=contact.workspace_id,
        contact=contact,
        amount=Decimal(amount),
        currency=currency.upper(),
        kind=kind,
        provider=provider,
        provider_reference=provider_reference,
        paid_at=paid_at or timezone.now(),
        description=description[:300],
    )
    if provider_reference:
        existing = Payment.objects.filter(
            workspace_id=contact.workspace_id, provider=provider, provider_reference=provider_reference
        ).first()
        if existing is not None:
            return existing, False
    payment.full_clean(exclude=["contact", "workspace"], validate_constraints=False)
    _attribute_history(payment, actor)
    try:
        with transaction.atomic():
            payment.save()
            if payment.amount > 0:
                advance_status_on_payment(contact=contact, actor=actor)
    except IntegrityError:
        if not provider_reference:
            raise
        # The same reference recorded by a concurrent call (a webhook retried while processing).
        return Payment.objects.get(
            workspace_id=contact.workspace_id, provider=provider, provider_reference=provider_reference
        ), False
    return payment, True


@dataclass(frozen=True)
class OverdueBalance:
    contact: Contact
    currency: str
    overdue: Decimal
    oldest_due_on: Any


@dataclass(frozen=True)
class MissedPayments:
    plans: list[RecurringPlan]
    balances: list[OverdueBalance]

    def __len__(self) -> int:
        return len(self.plans) + len(self.balances)


def late_plans(*, workspace: Workspace, now: datetime) -> models.QuerySet[RecurringPlan]:
    """Running plans whose last payment (or start, when never paid) is older than the period plus
    the grace days. Annotated with `last_paid_at` and `paid_from` (the moment the rule counts from)."""
    last_paid = (
        Payment.objects.filter(
            contact=OuterRef("contact"), currency=OuterRef("currency"), kind=Payment.Kind.SUBSCRIPTION, amount__gt=0
        )
        .order_by()
        .values("contact")
        .annotate(last=Max("paid_at"))
        .values("last")
    )
    plans = (
        RecurringPlan.objects.running()
        .filter(workspace=workspace)
        .annotate(last_paid_at=Subquery(last_paid))
        .annotate(paid_from=Coalesce(F("last_paid_at"), F("started_at")))
    )
    # One cutoff per (interval, grace) pair present: months are not a fixed duration, so the
    # cutoff is computed here with calendar arithmetic rather than in SQL.
    late = Q(pk__in=[])
    for interval, grace_days in plans.values_list("interval", "grace_days").distinct().order_by():
        cutoff = now - PLAN_PERIODS[interval] - timedelta(days=grace_days)
        late |= Q(interval=interval, grace_days=grace_days, paid_from__lt=cutoff)
    return plans.filter(late).select_related("contact").order_by("paid_from")


def overdue_balances(*, workspace: Workspace, now: datetime) -> list[OverdueBalance]:
    """Contacts whose charges due before today exceed everything they paid, per currency
    (payments settle the oldest charges first)."""
    today = now.astimezone(workspace.zone).date()
    currencies = (
        Charge.objects.filter(workspace=workspace, due_on__lt=today).values_list("currency", flat=True).distinct()
    )
    out: list[OverdueBalance] = []
    for currency in sorted(set(currencies)):
        oldest = (
            Charge.objects.filter(contact=OuterRef("pk"), currency=currency, due_on__lt=today)
            .order_by("due_on")
            .values("due_on")[:1]
        )
        rows = (
            Contact.objects.filter(workspace=workspace)
            .with_balance(currency, due_before=today)
            .filter(pending__gt=0)
            .annotate(oldest_due_on=Subquery(oldest))
            .order_by("oldest_due_on", "pk")
        )
        out.extend(OverdueBalance(row, currency, row.pending, row.oldest_due_on) for row in rows)
    return out


def missed_payments(*, workspace: Workspace, now: datetime | None = None) -> MissedPayments:
    now = now or timezone.now()
    return MissedPayments(
        plans=list(late_plans(workspace=workspace, now=now)),
        balances=overdue_balances(workspace=workspace, now=now),
    )


# Timeline


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str
    summary: str
    actor: str
    obj: models.Model


def _timeline_rows(contact: Contact) -> models.QuerySet[Any]:
    text = models.CharField()
    activities = (
        Activity.objects.filter(contact=contact)
        .annotate(source=Value("activity", output_field=text), at=F("occurred_at"))
        .values_list("pk", "source", "at")
        .order_by()
    )
    payments = (
        Payment.objects.filter(contact=contact)
        .annotate(source=Value("payment", output_field=text), at=F("paid_at"))
        .values_list("pk", "source", "at")
        .order_by()
    )
    deliveries = (
        Delivery.objects.counted()
        .filter(contact=contact)
        .annotate(source=Value("delivery", output_field=text), at=Coalesce("sent_at", "created_at"))
        .values_list("pk", "source", "at")
        .order_by()
    )
    return activities.union(payments, deliveries, all=True).order_by("-at", "-pk")


def timeline_page(*, contact: Contact, page: int | str = 1) -> Page[TimelineEntry]:
    """One page, newest first, of everything that happened with a contact: activities (notes,
    calls, status changes, form submissions…), payments and emails read from the delivery ledger."""
    paginator = Paginator(_timeline_rows(contact), TIMELINE_PAGE_SIZE)
    result = paginator.get_page(page)
    keys = list(result.object_list)
    ids: dict[str, list[int]] = {"activity": [], "payment": [], "delivery": []}
    for pk, source, _ in keys:
        ids[source].append(pk)
    loaded: dict[tuple[str, int], TimelineEntry] = {}
    for activity in Activity.objects.filter(pk__in=ids["activity"]):
        loaded["activity", activity.pk] = TimelineEntry(
            activity.occurred_at, activity.get_kind_display(), activity.summary, activity.actor, activity
        )
    for payment in Payment.objects.filter(pk__in=ids["payment"]):
        summary = f"{payment.amount:,.2f} {payment.currency} {payment.get_kind_display().lower()}"
        if payment.description:
            summary += f": {payment.description}"
        loaded["payment", payment.pk] = TimelineEntry(
            payment.paid_at, "Payment", summary, payment.get_provider_display(), payment
        )
    for delivery in Delivery.objects.filter(pk__in=ids["delivery"]).select_related("message", "campaign"):
        loaded["delivery", delivery.pk] = TimelineEntry(
            delivery.sent_at or delivery.created_at,
            f"Email {delivery.status}",
            f"“{delivery.message.subject}” ({delivery.campaign.name})",
            "campaign",
            delivery,
        )
    result.object_list = [loaded[source, pk] for pk, source, _ in keys if (source, pk) in loaded]
    return result


# Summary


def workspace_summary(*, workspace: Workspace, now: datetime | None = None) -> dict[str, Any]:
    """The at-a-glance numbers of one workspace."""
    now = now or timezone.now()
    since = now - SUMMARY_WINDOW
    contacts = Contact.objects.filter(workspace=workspace)
    rows = contacts.not_archived().order_by().values("lifecycle_status").annotate(n=Count("pk"))
    counts = {row["lifecycle_status"]: row["n"] for row in rows}
    by_status = [(slug, workspace.status_label(slug), counts.pop(slug, 0)) for slug in workspace.status_slugs]
    # Slugs removed from the list since contacts were given them still count, under their slug.
    by_status += [(slug, slug, n) for slug, n in sorted(counts.items())]
    charged = Charge.objects.filter(workspace=workspace).totals_by_currency()
    paid = Payment.objects.filter(workspace=workspace).totals_by_currency()
    missed = missed_payments(workspace=workspace, now=now)
    return {
        "workspace": workspace,
        "by_status": by_status,
        "archived": contacts.archived().count(),
        "money": list(balances(charges=charged, payments=paid).values()),
        "missed": missed,
        "new_contacts": contacts.filter(created_at__gte=since).count(),
        # Form submissions: recorded as activities by the website-form intake (the other half of
        # issue 6); counted here so the page needs no change when it lands.
        "form_submissions": Activity.objects.filter(
            workspace=workspace, kind=Activity.Kind.FORM_SUBMISSION, occurred_at__gte=since
        ).count(),
        "since": since,
    }
