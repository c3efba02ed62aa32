from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from contacts.models import Contact
from crm import views
from crm.admin_scoping import WorkspaceScopedAdmin, workspaces_for
from crm.models import (
    Activity,
    ApiKey,
    Charge,
    Consent,
    Form,
    FormSubmission,
    Membership,
    Payment,
    RecurringPlan,
    StripeEvent,
    Workspace,
)
from crm.tasks import process_stripe_event


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(WorkspaceScopedAdmin):
    workspace_path = "pk"
    list_display = ["name", "slug", "time_zone", "unsubscribe_behaviour", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Workspace]:
        return workspaces_for(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)


@admin.register(ApiKey)
class ApiKeyAdmin(WorkspaceScopedAdmin):
    list_display = ["name", "prefix", "workspace", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["workspace"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["workspace", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = ApiKey.issue(workspace=obj.workspace, name=obj.name)
        obj.pk, obj.prefix, obj.secret_hash, obj.created_at = key.pk, key.prefix, key.secret_hash, key.created_at
        # The only time the secret is ever shown; it is not stored.
        messages.warning(request, f"Copy this API key now, it will not be shown again: {secret}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            key.revoke()
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class InteractionInline(admin.TabularInline):
    """Notes and calls on the contact page: add one in the empty row; past ones are read-only
    (the timeline below the form shows everything else)."""

    model = Activity
    fk_name = "contact"
    extra = 1
    fields = ["kind", "summary", "occurred_at", "actor"]
    readonly_fields = ["actor"]
    verbose_name = "note or call"
    verbose_name_plural = "notes and calls"
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Activity]:
        return super().get_queryset(request).filter(kind__in=INTERACTION_KINDS)

    def formfield_for_choice_field(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "kind":
            kwargs["choices"] = [(kind.value, kind.label) for kind in INTERACTION_KINDS]
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    # Workspace membership is the permission (see admin_scoping): the contact's page decides.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


INTERACTION_KINDS = [Activity.Kind.NOTE, Activity.Kind.CALL]


class ContactOwnedAdmin(SimpleHistoryAdmin, WorkspaceScopedAdmin):
    """Money rows: the workspace follows the contact, and only the user's contacts can be picked."""

    autocomplete_fields = ["contact"]

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["workspace"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "contact":
            kwargs["queryset"] = Contact.objects.filter(workspace__in=workspaces_for(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.workspace_id = obj.contact.workspace_id
        super().save_model(request, obj, form, change)


@admin.register(Payment)
class PaymentAdmin(ContactOwnedAdmin):
    list_display = ["paid_at", "contact", "amount", "currency", "kind", "provider", "provider_reference"]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "kind", "provider", "currency"]
    search_fields = ["contact__email_key", "provider_reference", "description"]
    date_hierarchy = "paid_at"
    history_list_display = ["amount", "currency", "kind"]

    def get_urls(self) -> list[Any]:
        missed = path("missed/", self.admin_site.admin_view(views.missed_payments), name="crm_payment_missed")
        return [missed, *super().get_urls()]


@admin.register(Charge)
class ChargeAdmin(ContactOwnedAdmin):
    list_display = ["created_at", "contact", "amount", "currency", "due_on", "description", "provider"]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "currency", "provider"]
    search_fields = ["contact__email_key", "provider_reference", "description"]
    history_list_display = ["amount", "currency", "due_on"]


@admin.register(RecurringPlan)
class RecurringPlanAdmin(ContactOwnedAdmin):
    list_display = ["contact", "amount", "currency", "interval", "grace_days", "started_at", "ended_at", "provider"]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "interval", "provider"]
    search_fields = ["contact__email_key", "provider_reference"]


@admin.register(StripeEvent)
class StripeEventAdmin(WorkspaceScopedAdmin):
    list_display = ["received_at", "type", "event_id", "workspace", "processed_at", "outcome"]
    list_filter = [("workspace", admin.RelatedOnlyFieldListFilter), "type"]
    search_fields = ["event_id"]
    readonly_fields = ["workspace", "event_id", "type", "payload", "received_at", "processed_at", "outcome"]
    actions = ["process_again"]


# --- Website forms, CSV import and export (issue 6, intake half) --------------------------------
# Kept in one block so it merges cleanly with the customer-record admin.


@admin.register(Form)
class FormAdmin(WorkspaceScopedAdmin):
    list_display = ["name", "slug", "workspace", "key", "active", "created_at"]
    list_filter = ["workspace", "active"]
    search_fields = ["name", "slug", "key"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["key", "embed_snippet", "created_at"]
    fields = [
        "workspace",
        "name",
        "slug",
        "active",
        "allowed_origins",
        "consent_field",
        "consent_text",
        "honeypot_field",
        "redirect_url",
        "key",
        "embed_snippet",
        "created_at",
    ]

    @admin.display(description="Embed")
    def embed_snippet(self, obj: Form) -> str:
        if not obj.pk:
            return "Save the form to get its snippet."
        return format_html(
            '<pre>&lt;form action="{}/f/{}/" method="post"&gt;\n'
            '  &lt;input name="email" type="email" required&gt;\n'
            '  &lt;label&gt;&lt;input type="checkbox" name="{}" value="yes"&gt; {}&lt;/label&gt;\n'
            '  &lt;input name="{}" style="display:none" tabindex="-1" autocomplete="off"&gt;\n'
            "  &lt;button&gt;Send&lt;/button&gt;\n&lt;/form&gt;</pre>",
            settings.SITE_URL,
            obj.key,
            obj.consent_field,
            obj.consent_text or "Email me news",
            obj.honeypot_field,
        )


class ReadOnlyScopedAdmin(WorkspaceScopedAdmin):
    """Evidence (what was submitted, what was consented to) is never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Process selected unprocessed events again")
    def process_again(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        pending = list(queryset.unprocessed().values_list("pk", flat=True))
        for pk in pending:
            transaction.on_commit(lambda pk=pk: process_stripe_event.delay(pk))
        self.message_user(request, f"Queued {len(pending)} event(s).")


@admin.register(FormSubmission)
class FormSubmissionAdmin(ReadOnlyScopedAdmin):
    list_display = ["form", "contact", "ip", "created_at"]
    list_filter = ["workspace", "form"]
    search_fields = ["contact__email_key"]
    list_select_related = ["form", "contact"]


@admin.register(Consent)
class ConsentAdmin(ReadOnlyScopedAdmin):
    list_display = ["contact", "form", "granted", "value_received", "ip", "recorded_at"]
    list_filter = ["workspace", "granted", "form"]
    search_fields = ["contact__email_key"]
    list_select_related = ["form", "contact"]
