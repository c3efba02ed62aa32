from __future__ import annotations

import hashlib
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.utils import formataddr
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from campaigns import filters, templating
from contacts.models import Contact
from crm.models import Workspace, validate_time_zone


class CampaignQuerySet(models.QuerySet["Campaign"]):
    def active(self) -> CampaignQuerySet:
        return self.filter(active=True)

    def with_enrollment_counts(self) -> CampaignQuerySet:
        """Annotate `n_enrolled` and `n_unsubscribed` (enrolled contacts now unsubscribed), one
        correlated COUNT each, so the campaign rows are not grouped."""

        def count(**where: Any) -> Coalesce:
            rows = Enrollment.objects.filter(campaign=OuterRef("pk"), **where).order_by().values("campaign")
            return Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n"), output_field=models.IntegerField()), 0)

        return self.annotate(n_enrolled=count(), n_unsubscribed=count(contact__status=Contact.Status.UNSUBSCRIBED))


class Campaign(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=200)
    contact_filter = models.TextField(
        blank=True, help_text="e.g. language=en AND plan in (pro, team). Empty matches every contact."
    )
    active = models.BooleanField(default=False)
    send_time = models.TimeField(default=time(10, 0), help_text="Local time of day the campaign sends.")
    time_zone = models.CharField(
        max_length=64, blank=True, validators=[validate_time_zone], help_text="IANA name; empty: the workspace's."
    )
    from_name = models.CharField(max_length=200, blank=True)
    from_email = models.EmailField(blank=True)
    reply_to = models.EmailField(blank=True)
    # The local date of the last tick that did this campaign's daily work: at most one run a day.
    last_run_on = models.DateField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CampaignQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            filters.parse(self.contact_filter)
        except filters.FilterError as exc:
            raise ValidationError({"contact_filter": str(exc)}) from exc

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone or self.workspace.time_zone)

    def local_date(self, at: datetime) -> date:
        return at.astimezone(self.zone).date()

    def slot(self, on: date) -> datetime:
        """The aware moment of the send time on a local date (DST gaps resolve forward)."""
        naive = datetime.combine(on, self.send_time)
        aware = naive.replace(tzinfo=self.zone)
        # A wall time inside a spring-forward gap does not exist; round-tripping through UTC moves
        # it to the first real instant after the gap instead of silently shifting it an hour back.
        return aware.astimezone(zoneinfo.ZoneInfo("UTC")).astimezone(self.zone)

    def is_due(self, at: datetime) -> bool:
        """Whether a tick at `at` should do today's work: the slot has passed and it has not run today."""
        today = self.local_date(at)
        return self.active and at >= self.slot(today) and (self.last_run_on is None or self.last_run_on < today)

    def contact_q(self, *, now: datetime | None = None) -> Q:
        return filters.compile_filter(self.contact_filter, now=now or timezone.now())

    def matching_contacts(self, *, now: datetime | None = None) -> models.QuerySet[Contact]:
        # Archived contacts are finished customers: never enrolled, never mailed.
        contacts = Contact.objects.filter(workspace_id=self.workspace_id).not_archived()
        return contacts.filter(self.contact_q(now=now))

    @property
    def sender(self) -> str:
        from_email = self.from_email or self.workspace.default_from_email
        from_name = self.from_name or self.workspace.default_from_name
        if not from_email:
            from django.conf import settings

            return settings.DEFAULT_FROM_EMAIL
        # One line, quoted when needed: a name with a comma, quotes or a line break must neither add
        # a header nor turn into a second address.
        from_name = " ".join(templating.collapse_controls(from_name).split())
        return formataddr((from_name, from_email)) if from_name else from_email


MAX_SEND_DAY = 3650


class Message(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="messages")
    subject = models.CharField(max_length=300)
    html_body = models.TextField()
    text_body = models.TextField(blank=True, help_text="Derived from the HTML when empty.")
    send_day = models.PositiveIntegerField(
        default=0,
        # Ten years: beyond that the date arithmetic leaves the calendar and a drip makes no sense.
        validators=[MinValueValidator(0), MaxValueValidator(MAX_SEND_DAY)],
        help_text="Days after enrollment; 0 is the enrollment day.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["campaign", "send_day"]
        constraints = [models.UniqueConstraint(fields=["campaign", "send_day"], name="message_day_unique")]

    def __str__(self) -> str:
        return f"{self.campaign}: day {self.send_day}: {self.subject}"

    def content(self) -> MessageContent:
        """The template sources as sent: text derived from HTML when empty, unsubscribe footers added."""
        html = self.html_body
        if not templating.compile_template(html).uses("unsubscribe_url"):
            html = _append_before_body_end(html, HTML_FOOTER)
        text = self.text_body or templating.html_to_text(self.html_body)
        if not templating.compile_template(text).uses("unsubscribe_url"):
            text = text.rstrip() + TEXT_FOOTER
        return MessageContent(subject=self.subject, html=html, text=text)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for field in ("subject", "html_body", "text_body"):
            try:
                templating.compile_template(getattr(self, field))
            except templating.TemplateError as exc:
                errors[field] = str(exc)
        if errors:
            raise ValidationError(errors)


HTML_FOOTER = (
    '<p style="margin-top:32px;font-size:12px;color:#666">'
    'Don\'t want these emails? <a href="{{unsubscribe_url}}">Unsubscribe</a>.</p>'
)
TEXT_FOOTER = "\n\n--\nUnsubscribe: {{unsubscribe_url}}\n"


def _append_before_body_end(html: str, footer: str) -> str:
    index = html.lower().rfind("</body>")
    return html + footer if index < 0 else html[:index] + footer + html[index:]


@dataclass(frozen=True)
class MessageContent:
    subject: str
    html: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.subject}\0{self.html}\0{self.text}".encode()).hexdigest()[:16]


class Enrollment(models.Model):
    # No index of its own: enrollment_unique (campaign, contact) leads with it. Every index here
    # is paid once per enrolled contact by the tick's INSERT … SELECT.
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="enrollments", db_index=False)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="enrollments")
    enrolled_at = models.DateTimeField()
    # The campaign-local date of enrollment: message day d is due on enrolled_on + d.
    enrolled_on = models.DateField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "contact"], name="enrollment_unique")]
        indexes = [models.Index(fields=["campaign", "enrolled_on"], name="enrollment_campaign_day")]

    def __str__(self) -> str:
        return f"{self.contact} in {self.campaign}"

    def due_on(self, message: Message) -> date:
        return self.enrolled_on + timedelta(days=message.send_day)


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def queued(self) -> DeliveryQuerySet:
        return self.filter(status=Delivery.Status.QUEUED)

    def stale_sending(self, *, now: datetime, timeout: timedelta) -> DeliveryQuerySet:
        return self.filter(status=Delivery.Status.SENDING, claimed_at__lt=now - timeout)

    def counted(self) -> DeliveryQuerySet:
        return self.filter(is_test=False)

    def status_counts_by_message(self) -> dict[int, dict[str, int]]:
        """{message_id: {status: count}} in one GROUP BY; statuses with no rows are absent."""
        out: dict[int, dict[str, int]] = {}
        rows = (
            self.order_by()
            .values("message_id", "status")
            .annotate(n=Count("pk"))
            .values_list("message_id", "status", "n")
        )
        for message_id, status, n in rows:
            out.setdefault(message_id, {})[status] = n
        return out


class Delivery(models.Model):
    """One email to one contact: the ledger row that makes sending at-most-once."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"
        UNKNOWN = "unknown"
        SKIPPED = "skipped"

    # Indexes and foreign-key checks cost the tick once per scheduled delivery (a million at a
    # time): campaign and enrollment have no index of their own because delivery_campaign_status
    # and the unique keys lead with them; campaign and contact are denormalised copies of what
    # message and enrollment already reference, so the database does not check them again
    # (db_constraint=False; Django's on_delete still cascades / sets NULL).
    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    # SET_NULL, not CASCADE: deleting a contact (or unsubscribing, which may delete it) must not
    # erase the record of what was already sent; campaign counts stay true.
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.SET_NULL, related_name="deliveries", null=True, blank=True, db_index=False
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.SET_NULL, related_name="deliveries", null=True, blank=True, db_constraint=False
    )
    # Test sends ("send a test to me") go through the same path but are not counted.
    is_test = models.BooleanField(default=False)
    # The address as it was when sent: the ledger stays readable after the contact is gone.
    to_email = models.CharField(max_length=254, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    scheduled_on = models.DateField(null=True, blank=True)
    claim = models.CharField(max_length=32, blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0)
    # Indexed in Meta (a plain b-tree: only exact lookups, no LIKE index).
    provider_message_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["enrollment", "message"], name="delivery_once_per_message"),
            # Never more than one message per contact per campaign per day.
            models.UniqueConstraint(fields=["enrollment", "scheduled_on"], name="delivery_once_per_day"),
        ]
        indexes = [
            models.Index(fields=["status", "claimed_at"], name="delivery_status_claimed"),
            models.Index(fields=["campaign", "status"], name="delivery_campaign_status"),
            # Partial: rows not sent yet (every row the tick inserts) have no provider id to index.
            models.Index(
                fields=["provider_message_id"],
                name="delivery_provider_message_id",
                condition=~Q(provider_message_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message} → {self.contact or self.to_email} ({self.status})"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.pk, "status": self.status, "message": self.message_id, "contact": self.contact_id}


class SesEvent(models.Model):
    """One SES event received through Amazon SNS: the record that it was processed, exactly once.

    The unique SNS MessageId is the dedupe key: SNS delivers at least once and retries, so a second
    copy finds its row and is acknowledged without being processed again.
    """

    class Type(models.TextChoices):
        BOUNCE = "bounce"
        COMPLAINT = "complaint"
        DELIVERY = "delivery"
        SEND = "send"
        REJECT = "reject"
        OPEN = "open"
        CLICK = "click"
        DELIVERY_DELAY = "deliverydelay"
        RENDERING_FAILURE = "renderingfailure"
        SUBSCRIPTION = "subscription"
        OTHER = "other"

    sns_message_id = models.CharField(max_length=100, unique=True)
    topic_arn = models.CharField(max_length=256)
    event_type = models.CharField(max_length=20, choices=Type.choices)
    # "Permanent", "Transient" or "Undetermined" for bounces; the feedback type for complaints.
    subtype = models.CharField(max_length=64, blank=True)
    # SES mail.messageId: what Delivery.provider_message_id holds.
    provider_message_id = models.CharField(max_length=200, blank=True, db_index=True)
    delivery = models.ForeignKey(Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="ses_events")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    # The SES event as received (it names recipients: keep it only as long as you keep deliveries).
    payload = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "SES event"
        indexes = [models.Index(fields=["delivery", "event_type"], name="sesevent_delivery_type")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.subtype} {self.provider_message_id}".strip()
