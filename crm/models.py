from __future__ import annotations

import hashlib
import re
import secrets
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"'{value}' is not an IANA time zone name (for example Europe/Malta).")


DEFAULT_LIFECYCLE_STATUSES = [
    ("lead", "Lead"),
    ("proposal_sent", "Proposal sent"),
    ("proposal_signed", "Proposal signed"),
    ("deposit_paid", "Deposit paid"),
    ("waiting_production", "Waiting production"),
    ("in_production", "In production"),
    ("delivered", "Delivered"),
]
DEFAULT_INITIAL_STATUS = "lead"
SLUG_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


def default_lifecycle_statuses() -> list[dict[str, str]]:
    return [{"slug": slug, "label": label} for slug, label in DEFAULT_LIFECYCLE_STATUSES]


def validate_lifecycle_statuses(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError('Enter a non-empty list like [{"slug": "lead", "label": "Lead"}].')
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, dict) or set(item) != {"slug", "label"}:
            raise ValidationError('Each status must be {"slug": …, "label": …}.')
        slug, label = item["slug"], item["label"]
        if not isinstance(slug, str) or not SLUG_RE.match(slug):
            raise ValidationError(f"'{slug}' is not a slug (lowercase letters, digits, _ and -).")
        if not isinstance(label, str) or not label.strip():
            raise ValidationError(f"The status '{slug}' needs a label.")
        if slug in seen:
            raise ValidationError(f"The status '{slug}' is listed twice.")
        seen.add(slug)


class Workspace(models.Model):
    """One customer of Trickle: every contact, campaign and key belongs to exactly one."""

    class UnsubscribeBehaviour(models.TextChoices):
        DELETE = "delete", "Delete the contact"
        KEEP = "keep", "Keep the contact, marked unsubscribed"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    default_from_name = models.CharField(max_length=200, blank=True)
    default_from_email = models.EmailField(blank=True)
    unsubscribe_behaviour = models.CharField(
        max_length=10, choices=UnsubscribeBehaviour.choices, default=UnsubscribeBehaviour.DELETE
    )
    # The customer pipeline, in order: [{"slug": "lead", "label": "Lead"}, …]. The first is where new
    # contacts start.
    lifecycle_statuses = models.JSONField(default=default_lifecycle_statuses, validators=[validate_lifecycle_statuses])
    # Where a paid payment moves a contact that is still earlier in the pipeline; empty: never.
    status_on_payment = models.SlugField(max_length=64, blank=True, default="deposit_paid")
    # The signing secret of this workspace's Stripe webhook endpoint (`whsec_…`), used to verify
    # deliveries to /webhooks/stripe/<slug>/. Stored in clear: verifying an HMAC needs the key.
    stripe_webhook_secret = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.status_on_payment and self.status_on_payment not in self.status_slugs:
            raise ValidationError({"status_on_payment": f"'{self.status_on_payment}' is not one of the statuses."})

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def status_slugs(self) -> list[str]:
        statuses = self.lifecycle_statuses if isinstance(self.lifecycle_statuses, list) else []
        return [item["slug"] for item in statuses if isinstance(item, dict) and "slug" in item]

    @property
    def initial_status(self) -> str:
        slugs = self.status_slugs
        return slugs[0] if slugs else DEFAULT_INITIAL_STATUS

    def status_label(self, slug: str) -> str:
        statuses = self.lifecycle_statuses if isinstance(self.lifecycle_statuses, list) else []
        return next(
            (item.get("label", slug) for item in statuses if isinstance(item, dict) and item.get("slug") == slug), slug
        )

    def status_position(self, slug: str) -> int:
        """The index of a status in the pipeline; -1 for a slug no longer in the list."""
        slugs = self.status_slugs
        return slugs.index(slug) if slug in slugs else -1


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace}"


KEY_PREFIX_LEN = 8
# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is safe here (unlike passwords) and lets
    # authentication be one indexed lookup.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)

    def authenticate(self, secret: str) -> ApiKey | None:
        return self.active().select_related("workspace").filter(secret_hash=hash_secret(secret)).first()


class ApiKey(models.Model):
    """A workspace's API key. Only a hash of the secret is stored: it is shown once, on creation."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, default="default")
    prefix = models.CharField(max_length=20, editable=False, db_index=True)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, workspace: Workspace, name: str = "default") -> tuple[ApiKey, str]:
        """Create a key and return it with its secret, which is never retrievable again."""
        prefix = "trk_" + secrets.token_hex(KEY_PREFIX_LEN // 2)
        secret = f"{prefix}_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(workspace=workspace, name=name, prefix=prefix, secret_hash=hash_secret(secret))
        return key, secret

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


class ActivityQuerySet(models.QuerySet["Activity"]):
    def for_contact(self, contact_id: int) -> ActivityQuerySet:
        return self.filter(contact_id=contact_id).order_by("-occurred_at", "-id")


class Activity(models.Model):
    """One event on a contact's timeline: a note, a call, a form submission, a status change, an
    unsubscribe… Emails are not copied here one row each: the timeline reads them from the
    delivery ledger, so sending stays one write per email."""

    class Kind(models.TextChoices):
        NOTE = "note"
        CALL = "call"
        STATUS_CHANGE = "status_change"
        FORM_SUBMISSION = "form_submission"
        PAYMENT = "payment"
        UNSUBSCRIBED = "unsubscribed"
        RESUBSCRIBED = "resubscribed"
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        EMAIL_EVENT = "email_event"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="activities")
    # Nullable so the record of an unsubscribe survives the deletion of the contact it was about.
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.SET_NULL, null=True, blank=True, related_name="activities"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    summary = models.CharField(max_length=300)
    data = models.JSONField(default=dict, blank=True)
    # Who or what caused it: a username, "api:<key prefix>", "stripe", "form:<name>", "ses".
    actor = models.CharField(max_length=100, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = ActivityQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name_plural = "activities"
        indexes = [models.Index(fields=["contact", "-occurred_at"], name="activity_contact_time")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.summary}"


# Stripe and ISO 4217 minor units: amounts arrive as integers of the smallest unit.
ZERO_DECIMAL_CURRENCIES = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def validate_currency(value: str) -> None:
    if not CURRENCY_RE.match(value or ""):
        raise ValidationError(f"'{value}' is not an ISO 4217 currency code (three capital letters, e.g. EUR).")


def from_minor_units(amount: int, currency: str) -> Decimal:
    """Stripe's integer amount in the smallest unit as a Decimal in the currency's major unit."""
    code = currency.upper()
    exponent = 0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2
    return Decimal(int(amount)).scaleb(-exponent)


def money_field(**kwargs: object) -> models.DecimalField:
    # 14 digits before the point covers any invoice; 3 after covers the three-decimal currencies.
    return models.DecimalField(max_digits=17, decimal_places=3, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Balance:
    """One currency's money for a contact. Never summed across currencies."""

    currency: str
    charged: Decimal
    paid: Decimal

    @property
    def pending(self) -> Decimal:
        # Negative when more was paid than charged: a credit, shown as such rather than hidden.
        return self.charged - self.paid


def balances(*, charges: dict[str, Decimal], payments: dict[str, Decimal]) -> dict[str, Balance]:
    zero = Decimal("0")
    return {
        currency: Balance(currency, charges.get(currency) or zero, payments.get(currency) or zero)
        for currency in sorted({*charges, *payments})
    }


class Provider(models.TextChoices):
    STRIPE = "stripe"
    MANUAL = "manual"
    BANK = "bank"


class PaymentQuerySet(models.QuerySet["Payment"]):
    def totals_by_currency(self) -> dict[str, Decimal]:
        """{currency: net amount}; refunds are negative rows so they subtract."""
        rows = self.order_by().values("currency").annotate(total=models.Sum("amount"))
        return {row["currency"]: row["total"] for row in rows}


class Payment(models.Model):
    """Money received (or, as a negative amount, refunded). Never edited by a balance: balances
    are sums of these rows and of `Charge` rows."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        INVOICE = "invoice"
        SUBSCRIPTION = "subscription"
        REFUND = "refund"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="payments")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.PROTECT, related_name="payments")
    amount = money_field(help_text="Negative for a refund.")
    currency = models.CharField(max_length=3, validators=[validate_currency], help_text="ISO 4217, e.g. EUR")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.MANUAL)
    # Stripe's payment intent / invoice id, a bank transfer reference…: unique per provider when set,
    # so the same money is never recorded twice.
    provider_reference = models.CharField(max_length=200, blank=True)
    description = models.CharField(max_length=300, blank=True)
    paid_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ["-paid_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider", "provider_reference"],
                condition=~models.Q(provider_reference=""),
                name="payment_provider_reference_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="refund", amount__lte=0) | (~models.Q(kind="refund") & models.Q(amount__gt=0)),
                name="payment_refund_sign",
            ),
        ]
        indexes = [models.Index(fields=["contact", "currency", "-paid_at"], name="payment_contact_time")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} {self.kind} ({self.contact_id})"

    def clean(self) -> None:
        self.currency = (self.currency or "").upper()
        if self.kind == self.Kind.REFUND and self.amount is not None and self.amount > 0:
            raise ValidationError({"amount": "A refund is a negative amount, e.g. -500.00."})
        if self.kind != self.Kind.REFUND and self.amount is not None and self.amount <= 0:
            raise ValidationError({"amount": "A payment is a positive amount; record money returned as a refund."})


class ChargeQuerySet(models.QuerySet["Charge"]):
    def totals_by_currency(self) -> dict[str, Decimal]:
        rows = self.order_by().values("currency").annotate(total=models.Sum("amount"))
        return {row["currency"]: row["total"] for row in rows}


class Charge(models.Model):
    """An amount a contact owes: an invoice sent, or a price agreed (a signed proposal). What is
    pending is charges minus payments, per currency."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="charges")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.PROTECT, related_name="charges")
    amount = money_field(validators=[MinValueValidator(Decimal("0.001"))])
    currency = models.CharField(max_length=3, validators=[validate_currency], help_text="ISO 4217, e.g. EUR")
    description = models.CharField(max_length=300, blank=True)
    # Empty: agreed but not yet due (never counts as missed).
    due_on = models.DateField(null=True, blank=True, db_index=True)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.MANUAL)
    provider_reference = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()
    objects = ChargeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider", "provider_reference"],
                condition=~models.Q(provider_reference=""),
                name="charge_provider_reference_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} due {self.due_on or '-'} ({self.contact_id})"

    def clean(self) -> None:
        self.currency = (self.currency or "").upper()


class RecurringPlanQuerySet(models.QuerySet["RecurringPlan"]):
    def running(self) -> RecurringPlanQuerySet:
        return self.filter(ended_at__isnull=True)


class RecurringPlan(models.Model):
    """A contact paying every period (a retainer, a subscription): the basis of the missed-payment
    rule "last payment older than the period plus the grace days"."""

    class Interval(models.TextChoices):
        WEEK = "week"
        MONTH = "month"
        QUARTER = "quarter"
        YEAR = "year"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="recurring_plans")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.PROTECT, related_name="recurring_plans")
    amount = money_field(validators=[MinValueValidator(Decimal("0.001"))])
    currency = models.CharField(max_length=3, validators=[validate_currency])
    interval = models.CharField(max_length=8, choices=Interval.choices, default=Interval.MONTH)
    grace_days = models.PositiveIntegerField(default=7)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices, default=Provider.MANUAL)
    provider_reference = models.CharField(max_length=200, blank=True)

    objects = RecurringPlanQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider", "provider_reference"],
                condition=~models.Q(provider_reference=""),
                name="plan_provider_reference_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} every {self.interval} ({self.contact_id})"

    def clean(self) -> None:
        self.currency = (self.currency or "").upper()


class StripeEventQuerySet(models.QuerySet["StripeEvent"]):
    def unprocessed(self) -> StripeEventQuerySet:
        return self.filter(processed_at__isnull=True)


class StripeEvent(models.Model):
    """Every verified Stripe webhook event, stored once: the unique key makes a replay a no-op."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="stripe_events")
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # What processing did or why it could not ("ignored: no email"), for the operator.
    outcome = models.TextField(blank=True)

    objects = StripeEventQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        # Per workspace: two workspaces connected to one Stripe account each get the event.
        constraints = [models.UniqueConstraint(fields=["workspace", "event_id"], name="stripe_event_once")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


# --- Website form intake and idempotency (issue 6, intake half) ---------------------------------


def new_form_key() -> str:
    # Public (it sits in the page's HTML), so it only has to be unguessable enough not to be
    # enumerated; the allowed origins and the rate limit do the rest.
    return "f_" + secrets.token_urlsafe(16)


class Form(models.Model):
    """A public website form posting to `/f/<key>/`. Its slug tags the contacts it creates
    (`source=pricing_wizard`), so campaigns can filter on where people came from."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="forms")
    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=64, help_text="Tags the contacts this form creates, e.g. pricing_wizard (their `source`)."
    )
    key = models.CharField(max_length=64, unique=True, default=new_form_key, editable=False)
    allowed_origins = models.TextField(
        blank=True,
        help_text="One origin per line, e.g. https://www.example.com. Browsers on other sites are refused.",
    )
    consent_field = models.CharField(
        max_length=64, default="consent", help_text="The form field carrying the marketing consent checkbox."
    )
    consent_text = models.TextField(blank=True, help_text="The consent wording shown next to the checkbox, verbatim.")
    honeypot_field = models.CharField(
        max_length=64, default="_gotcha", help_text="A hidden field people leave empty; bots fill it."
    )
    redirect_url = models.URLField(
        blank=True, help_text="Where a plain HTML form post is sent after submitting (a thank-you page)."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "slug"], name="form_slug_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def origins(self) -> set[str]:
        return {normalize_origin(line) for line in self.allowed_origins.split() if line.strip()}

    def allows_origin(self, origin: str) -> bool:
        return bool(origin) and normalize_origin(origin) in self.origins


def normalize_origin(origin: str) -> str:
    # Browsers send `https://example.com` (no path, no trailing slash); operators paste all sorts.
    return origin.strip().rstrip("/").lower()


class FormSubmission(models.Model):
    """Everything a form posted, kept as received (after size limits), for the record."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="form_submissions")
    form = models.ForeignKey(Form, on_delete=models.CASCADE, related_name="submissions")
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.SET_NULL, null=True, blank=True, related_name="form_submissions"
    )
    data = models.JSONField(default=dict)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.form} at {self.created_at:%Y-%m-%d %H:%M}"


class Consent(models.Model):
    """Marketing consent as given on one submission: the proof (what was shown, when, from where).

    `granted` is true only for an explicit affirmative value in the form's consent field; a missing
    or negative value is recorded as not granted, never assumed."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="consents")
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="consents")
    form = models.ForeignKey(Form, on_delete=models.SET_NULL, null=True, blank=True, related_name="consents")
    submission = models.OneToOneField(
        FormSubmission, on_delete=models.SET_NULL, null=True, blank=True, related_name="consent"
    )
    granted = models.BooleanField()
    text_shown = models.TextField(blank=True)
    # The raw value the form sent (`on`, `yes`, absent…), so the decision can be audited.
    value_received = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]

    def __str__(self) -> str:
        return f"{'granted' if self.granted else 'not granted'} via {self.form} at {self.recorded_at:%Y-%m-%d %H:%M}"


IDEMPOTENCY_TTL = timedelta(hours=24)


class IdempotencyRecordQuerySet(models.QuerySet["IdempotencyRecord"]):
    def expired(self, *, now: datetime | None = None) -> IdempotencyRecordQuerySet:
        return self.filter(created_at__lt=(now or timezone.now()) - IDEMPOTENCY_TTL)


class IdempotencyRecord(models.Model):
    """One `Idempotency-Key` seen in one scope (a workspace's API, or one form) within 24 hours.

    The row is inserted before the request runs (status NULL = in flight): the unique constraint is
    the lock that makes a concurrent duplicate a 409 rather than a second execution."""

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=200, blank=True)
    # The few headers a replay needs to mean the same thing (Location, CORS…): see REPLAYED_HEADERS.
    headers = models.JSONField(default=dict, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = IdempotencyRecordQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key_unique")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"

    @property
    def in_flight(self) -> bool:
        return self.status_code is None
