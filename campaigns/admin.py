from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from campaigns import filters, sending, services
from campaigns.models import Campaign, Delivery, Enrollment, Message
from contacts.models import Contact
from crm.admin_scoping import WorkspaceScopedAdmin

COUNTED = ["queued", "sent", "failed", "unknown", "skipped"]


def _count(model: type[Any], **where: Any) -> Coalesce:
    rows = model.objects.filter(campaign=OuterRef("pk"), **where).order_by().values("campaign")
    return Coalesce(Subquery(rows.annotate(n=Count("pk")).values("n"), output_field=IntegerField()), 0)


def sample_contact(campaign: Campaign) -> Contact | None:
    try:
        return campaign.matching_contacts().subscribed().order_by("-created_at").first()
    except filters.FilterError:
        return None


def render_preview(message: Message, contact: Contact | None) -> tuple[str, str, str]:
    data = (
        contact.template_data()
        if contact
        else {"name": "", "email": "someone@example.com", "company": "", "attributes": {}}
    )
    return sending.render(
        message.content(), sending.template_data(data, unsubscribe=sending.unsubscribe_url("preview"))
    )


def email_preview(subject: str, html: str, text: str) -> str:
    return format_html(
        '<div class="trickle-preview"><p><strong>Subject:</strong> {}</p>'
        '<iframe sandbox="" srcdoc="{}" title="Email preview" '
        'style="width:100%;max-width:720px;height:320px;border:1px solid #ccc;background:#fff"></iframe>'
        '<details><summary>Plain text</summary><pre style="white-space:pre-wrap">{}</pre></details></div>',
        subject,
        html,
        text,
    )


class MessageInline(admin.StackedInline):
    model = Message
    extra = 0
    fields = ["send_day", "subject", "html_body", "text_body", "preview"]
    readonly_fields = ["preview"]
    ordering = ["send_day"]

    @admin.display(description="Preview (latest matching contact)")
    def preview(self, obj: Message) -> str:
        if not obj.pk:
            return "Save to see a preview."
        contact = sample_contact(obj.campaign)
        who = f"for {contact.email}" if contact else "with sample data (no contact matches yet)"
        return format_html("<p>{}</p>{}", who, email_preview(*render_preview(obj, contact)))


@admin.register(Campaign)
class CampaignAdmin(WorkspaceScopedAdmin):
    list_display = [
        "name",
        "workspace",
        "state",
        "send_at",
        *[f"n_{s}" for s in ("enrolled", *COUNTED)],
        "n_unsubscribed",
    ]
    list_filter = ["workspace", "active"]
    search_fields = ["name"]
    inlines = [MessageInline]
    actions = ["activate", "pause", "send_test_to_me"]
    readonly_fields = ["matching", "paused_reason", "last_run_on", "created_at", "updated_at", "ledger"]
    fieldsets = [
        (None, {"fields": ["workspace", "name", "active", "paused_reason"]}),
        ("Who", {"fields": ["contact_filter", "matching"]}),
        ("When", {"fields": ["send_time", "time_zone", "last_run_on"]}),
        ("Sender", {"fields": ["from_name", "from_email", "reply_to"]}),
        ("Sent mail", {"fields": ["ledger", "created_at", "updated_at"]}),
    ]

    class Media:
        js = ["campaigns/match_count.js"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        qs = super().get_queryset(request).select_related("workspace")
        annotations = {f"n_{s}_": _count(Delivery, status=s, is_test=False) for s in COUNTED}
        annotations["n_enrolled_"] = _count(Enrollment)
        annotations["n_unsubscribed_"] = _count(Enrollment, contact__status=Contact.Status.UNSUBSCRIBED)
        return qs.annotate(**annotations)

    def get_urls(self) -> list[Any]:
        custom = [
            path("match-count/", self.admin_site.admin_view(self.match_count), name="campaigns_campaign_match_count"),
        ]
        return custom + super().get_urls()

    def match_count(self, request: HttpRequest) -> JsonResponse:
        """How many contacts a filter matches right now, for the live count on the change form."""
        workspace_id = request.GET.get("workspace", "")
        allowed = self.formfield_for_foreignkey(Campaign._meta.get_field("workspace"), request).queryset
        if not workspace_id.isdigit() or not allowed.filter(pk=int(workspace_id)).exists():
            return JsonResponse({"error": "Choose a workspace first."}, status=400)
        text = request.GET.get("filter", "")
        try:
            q = filters.compile_filter(text, now=timezone.now())
        except filters.FilterError as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        contacts = Contact.objects.filter(workspace_id=int(workspace_id)).filter(q)
        return JsonResponse({"matching": contacts.count(), "subscribed": contacts.subscribed().count()})

    @admin.display(description="State")
    def state(self, obj: Campaign) -> str:
        if obj.active:
            return "active"
        return f"paused: {obj.paused_reason}" if obj.paused_reason else "paused"

    @admin.display(description="Sends at")
    def send_at(self, obj: Campaign) -> str:
        return f"{obj.send_time:%H:%M} {obj.time_zone or obj.workspace.time_zone}"

    @admin.display(description="Contacts matching now")
    def matching(self, obj: Campaign) -> str:
        if not obj.pk:
            return "Choose a workspace and type a filter: the count updates as you type."
        try:
            contacts = obj.matching_contacts()
            return format_html(
                '<span id="match-count">{} contacts match, {} of them subscribed.</span>',
                contacts.count(),
                contacts.subscribed().count(),
            )
        except filters.FilterError as exc:
            return format_html('<span id="match-count">{}</span>', str(exc))

    @admin.display(description="Deliveries")
    def ledger(self, obj: Campaign) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:campaigns_delivery_changelist") + f"?campaign__id__exact={obj.pk}"
        counts = dict(obj.deliveries.counted().values_list("status").annotate(n=Count("pk")).order_by())
        return format_html(
            '<a href="{}">Every email of this campaign</a>: {}',
            url,
            format_html_join(", ", "{} {}", ((counts.get(s, 0), s) for s in COUNTED)),
        )

    @admin.action(description="Activate selected campaigns")
    def activate(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        n = queryset.update(active=True, paused_reason="")
        self.message_user(request, f"Activated {n} campaign(s).")

    @admin.action(description="Pause selected campaigns")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        n = queryset.update(active=False)
        self.message_user(request, f"Paused {n} campaign(s).")

    @admin.action(description="Send a test of every message to me")
    def send_test_to_me(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        if not request.user.email:
            self.message_user(request, "Your user has no email address; set one first.", messages.ERROR)
            return
        sent = 0
        for campaign in queryset:
            sample = sample_contact(campaign)
            for message in campaign.messages.order_by("send_day"):
                services.send_test(message=message, to_email=request.user.email, sample=sample)
                sent += 1
        self.message_user(request, f"Sent {sent} test email(s) to {request.user.email} (not counted in stats).")

    def _n(self, obj: Campaign, name: str) -> int:
        return getattr(obj, f"n_{name}_", 0)

    @admin.display(description="enrolled")
    def n_enrolled(self, obj: Campaign) -> int:
        return self._n(obj, "enrolled")

    @admin.display(description="queued")
    def n_queued(self, obj: Campaign) -> int:
        return self._n(obj, "queued")

    @admin.display(description="sent")
    def n_sent(self, obj: Campaign) -> int:
        return self._n(obj, "sent")

    @admin.display(description="failed")
    def n_failed(self, obj: Campaign) -> int:
        return self._n(obj, "failed")

    @admin.display(description="unknown")
    def n_unknown(self, obj: Campaign) -> int:
        return self._n(obj, "unknown")

    @admin.display(description="skipped")
    def n_skipped(self, obj: Campaign) -> int:
        return self._n(obj, "skipped")

    @admin.display(description="unsubscribed")
    def n_unsubscribed(self, obj: Campaign) -> int:
        return self._n(obj, "unsubscribed")


@admin.register(Delivery)
class DeliveryAdmin(WorkspaceScopedAdmin):
    """The ledger: read-only; every email that went out, rendered as it was sent."""

    workspace_path = "campaign__workspace"
    list_display = ["id", "campaign", "send_day", "to", "status", "scheduled_on", "sent_at", "is_test"]
    list_filter = ["status", "is_test", "campaign"]
    search_fields = ["to_email", "contact__email_key", "provider_message_id"]
    list_select_related = ["campaign", "message", "contact"]
    fields = [
        "campaign", "message", "contact", "to_email", "status", "is_test", "scheduled_on", "attempts",
        "provider_message_id", "error", "created_at", "claimed_at", "sent_at", "rendered",
    ]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The ledger is what makes "at most once" checkable: nobody edits or deletes it by hand.
        return False

    @admin.display(description="day")
    def send_day(self, obj: Delivery) -> int:
        return obj.message.send_day

    @admin.display(description="to")
    def to(self, obj: Delivery) -> str:
        return obj.to_email or (obj.contact.email if obj.contact else "")

    @admin.display(description="The email")
    def rendered(self, obj: Delivery) -> str:
        """Rendered from the message and the contact's data: what the templates produce for them."""
        contact = obj.contact
        data = (
            contact.template_data() if contact else {"name": "", "email": obj.to_email, "company": "", "attributes": {}}
        )
        token = contact.unsubscribe_token if contact and not obj.is_test else "test-preview"
        subject, html, text = sending.render(
            obj.message.content(), sending.template_data(data, unsubscribe=sending.unsubscribe_url(token))
        )
        return email_preview(subject, html, text)
