from __future__ import annotations

import secrets
from datetime import date
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from simple_history.models import HistoricalRecords

from contacts.normalize import email_key, phone_digits
from contacts.suppression import Suppression, suppression_hash
from crm.models import DEFAULT_INITIAL_STATUS, Balance, Workspace, balances

# Audit history covers what people edit by hand. Derived keys, the token, free-form attributes
# (machine-written by the API at batch rates) and timestamps are left out.
HISTORY_EXCLUDED_FIELDS = [
    "email_key",
    "phone_digits",
    "email_hash",
    "attributes",
    "unsubscribe_token",
    "updated_at",
    "stripe_customer_id",
]


def new_unsubscribe_token() -> str:
    # 256 random bits: unguessable, and not derivable from the address.
    return secrets.token_urlsafe(32)


class ContactQuerySet(models.QuerySet["Contact"]):
    def subscribed(self) -> ContactQuerySet:
        return self.filter(status=Contact.Status.SUBSCRIBED)

    def for_email(self, email: str) -> ContactQuerySet:
        return self.filter(email_key=email_key(email))

    def not_suppressed(self) -> ContactQuerySet:
        """Contacts whose address is not on their workspace's suppression list (an anti-join)."""
        return self.filter(~Suppression.objects.matching_contact())

    def suppressed(self) -> ContactQuerySet:
        return self.filter(Suppression.objects.matching_contact())

    def not_archived(self) -> ContactQuerySet:
        """Contacts that belong in default lists and campaigns: archived ones are finished customers."""
        return self.filter(archived_at__isnull=True)

    def archived(self) -> ContactQuerySet:
        return self.filter(archived_at__isnull=False)

    def with_balance(self, currency: str, *, due_before: date | None = None) -> ContactQuerySet:
        """Annotate `charged`, `paid` and `pending` in one currency (refunds are negative payments).

        With `due_before`, `charged` counts only charges due before that date, so `pending` is the
        overdue amount: payments settle the oldest charges first."""
        from crm.models import Charge, Payment

        zero = Value(Decimal("0"), output_field=Payment._meta.get_field("amount"))
        charges = Charge.objects.filter(contact=OuterRef("pk"), currency=currency)
        if due_before is not None:
            charges = charges.filter(due_on__lt=due_before)
        paid = Payment.objects.filter(contact=OuterRef("pk"), currency=currency)
        return self.annotate(
            charged=Coalesce(Subquery(_sum_of(charges)), zero),
            paid=Coalesce(Subquery(_sum_of(paid)), zero),
        ).annotate(pending=F("charged") - F("paid"))


def _sum_of(qs: models.QuerySet[Any]) -> models.QuerySet[Any]:
    return qs.order_by().values("contact").annotate(total=Sum("amount")).values("total")


class Contact(models.Model):
    class Status(models.TextChoices):
        SUBSCRIBED = "subscribed"
        UNSUBSCRIBED = "unsubscribed"

    class Source(models.TextChoices):
        API = "api"
        FORM = "form"
        IMPORT = "import"
        ADMIN = "admin"

    # No index of its own: every composite index below starts with workspace_id.
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="contacts", db_index=False)
    email = models.CharField(max_length=254)
    # Case-folded email: the unique key, so dedupe holds in the database on SQLite and PostgreSQL.
    email_key = models.CharField(max_length=254, editable=False)
    # suppression_hash(workspace, email): lets enrollment anti-join the suppression list in SQL.
    # Not indexed: that join probes the suppression table's index, and the only lookups of a
    # contact by hash (lifting a suppression) are rare admin actions; a 64-character random key
    # was the costliest index of the table to keep up (docs/api.md).
    email_hash = models.CharField(max_length=64, editable=False, default="")
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=32, blank=True, help_text="E.164, e.g. +35699123456")
    # Searched with `contains` (any spelling, any prefix), which no B-tree index serves.
    phone_digits = models.CharField(max_length=32, blank=True, editable=False)
    company = models.CharField(max_length=200, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    # One of Source, or a form's name (`pricing_wizard`) so campaigns can filter on where people came from.
    source = models.CharField(max_length=64, default=Source.API)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBSCRIBED)
    unsubscribe_token = models.CharField(max_length=64, default=new_unsubscribe_token, editable=False)
    # One of the workspace's `lifecycle_statuses` slugs; change it with crm.services.change_status
    # so the change lands on the timeline.
    lifecycle_status = models.CharField(max_length=64, default=DEFAULT_INITIAL_STATUS)
    notes = models.TextField(blank=True)
    # Archived contacts are finished customers: hidden from default lists and never enrolled.
    archived_at = models.DateTimeField(null=True, blank=True)
    # Stripe's `cus_…` id, learned from webhooks; matches events that carry no email.
    stripe_customer_id = models.CharField(max_length=255, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContactQuerySet.as_manager()
    history = HistoricalRecords(excluded_fields=HISTORY_EXCLUDED_FIELDS)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Every index is paid for on each insert and on each update that is not HOT, which is most
        # of an import's and a batch upsert's database time: only what a query uses, and partial
        # indexes for columns most rows leave empty (docs/api.md). A constraint rather than
        # `unique=True` on the token: PostgreSQL would also get a LIKE index nobody queries.
        constraints = [
            models.UniqueConstraint(fields=["workspace", "email_key"], name="contact_email_unique"),
            models.UniqueConstraint(fields=["unsubscribe_token"], name="contact_unsubscribe_token_unique"),
        ]
        indexes = [
            models.Index(fields=["workspace", "status"], name="contact_ws_status"),
            models.Index(fields=["workspace", "lifecycle_status"], name="contact_ws_lifecycle"),
            models.Index(
                fields=["workspace", "archived_at"], name="contact_ws_archived", condition=Q(archived_at__isnull=False)
            ),
            models.Index(
                fields=["stripe_customer_id"], name="contact_stripe_customer", condition=~Q(stripe_customer_id="")
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.refresh_keys()
        if self._state.adding and self.lifecycle_status == DEFAULT_INITIAL_STATUS:
            # A workspace with its own pipeline starts new contacts at its own first status.
            self.lifecycle_status = self.workspace.initial_status
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            # A save that touches only untracked fields writes no history row.
            if set(update_fields) <= {*HISTORY_EXCLUDED_FIELDS, "created_at"}:
                self.skip_history_when_saving = True
            kwargs["update_fields"] = {*update_fields, "email_key", "phone_digits", "email_hash"}
        try:
            super().save(*args, **kwargs)
        finally:
            self.__dict__.pop("skip_history_when_saving", None)

    def clean(self) -> None:
        super().clean()
        if self.workspace_id is not None and self.lifecycle_status not in self.workspace.status_slugs:
            choices = ", ".join(self.workspace.status_slugs)
            raise ValidationError({"lifecycle_status": f"'{self.lifecycle_status}' is not one of: {choices}."})

    def refresh_keys(self) -> None:
        """Derived columns; call before bulk_create, which bypasses save()."""
        self.email_key = email_key(self.email)
        self.phone_digits = phone_digits(self.phone)
        self.email_hash = suppression_hash(self.workspace_id, self.email) if self.workspace_id else ""

    @property
    def is_subscribed(self) -> bool:
        return self.status == self.Status.SUBSCRIBED

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None

    @property
    def lifecycle_label(self) -> str:
        return self.workspace.status_label(self.lifecycle_status)

    def archive(self) -> None:
        if self.archived_at is None:
            self.archived_at = timezone.now()
            self.save(update_fields=["archived_at", "updated_at"])

    def unarchive(self) -> None:
        if self.archived_at is not None:
            self.archived_at = None
            self.save(update_fields=["archived_at", "updated_at"])

    def balances(self) -> dict[str, Balance]:
        """Charged, paid and pending per currency, summed from the rows (never stored)."""
        return balances(charges=self.charges.totals_by_currency(), payments=self.payments.totals_by_currency())

    def has_business_records(self) -> bool:
        """Whether this contact is a customer record worth keeping: deleting it (say, on an
        unsubscribe) would lose payments, charges, notes or a pipeline stage past the first."""
        from crm.models import Activity

        past_first = self.lifecycle_status not in {DEFAULT_INITIAL_STATUS, self.workspace.initial_status}
        return (
            past_first
            or bool(self.notes.strip())
            or self.payments.exists()
            or self.charges.exists()
            or self.recurring_plans.exists()
            or self.activities.filter(kind__in=[Activity.Kind.NOTE, Activity.Kind.CALL]).exists()
        )

    def template_data(self) -> dict[str, Any]:
        """The plain data a message template may see: never the model itself."""
        return {
            "name": self.name,
            "email": self.email,
            "company": self.company,
            "attributes": dict(self.attributes or {}),
        }
