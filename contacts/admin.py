from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from contacts.models import Contact
from contacts.suppression import Suppression, suppression_hash
from contacts.unsubscribe import lift_suppression, resubscribe
from crm.admin import InteractionInline
from crm.admin_contact_import import ContactImportExportMixin
from crm.admin_scoping import WorkspaceScopedAdmin, workspaces_for
from crm.models import Activity
from crm.services import actor_name, change_status, timeline_page

MAILING_KINDS = [
    Activity.Kind.UNSUBSCRIBED,
    Activity.Kind.RESUBSCRIBED,
    Activity.Kind.BOUNCED,
    Activity.Kind.COMPLAINED,
]
HEX_RE = re.compile(r"\A[0-9a-f]{6,64}\Z")


class ArchivedFilter(admin.SimpleListFilter):
    """Archived contacts are hidden unless asked for: the default list is the live customers."""

    title = "archived"
    parameter_name = "archived"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Archived"), ("all", "All")]

    def choices(self, changelist: Any) -> Any:
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Not archived",
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        if self.value() == "yes":
            return queryset.archived()
        if self.value() == "all":
            return queryset
        return queryset.not_archived()


@admin.register(Contact)
class ContactAdmin(ContactImportExportMixin, SimpleHistoryAdmin, WorkspaceScopedAdmin):
    list_display = [
        "email",
        "name",
        "company",
        "phone",
        "lifecycle_status",
        "source",
        "status",
        "suppressed",
        "workspace",
        "created_at",
    ]
    list_filter = [
        ArchivedFilter,
        ("workspace", admin.RelatedOnlyFieldListFilter),
        "lifecycle_status",
        "status",
        "source",
    ]
    search_fields = ["email_key", "name", "company", "phone_digits"]
    readonly_fields = ["balances", "archived_at", "created_at", "updated_at", "suppressed", "mailing_history"]
    fields = [
        "workspace",
        "email",
        "name",
        "company",
        "phone",
        "lifecycle_status",
        "notes",
        "balances",
        "attributes",
        "source",
        "status",
        "suppressed",
        "mailing_history",
        "archived_at",
        "created_at",
        "updated_at",
    ]
    history_list_display = ["lifecycle_status", "archived_at"]
    inlines = [InteractionInline]
    actions = ["archive", "unarchive", "resubscribe_selected", "export_csv"]
    change_form_template = "crm/contact_change_form.html"

    def get_form(self, request: HttpRequest, obj: Contact | None = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None and "lifecycle_status" in form.base_fields:
            choices = [(item["slug"], item["label"]) for item in obj.workspace.lifecycle_statuses]
            if obj.lifecycle_status not in obj.workspace.status_slugs:
                choices.append((obj.lifecycle_status, obj.lifecycle_status))
            form.base_fields["lifecycle_status"] = forms.ChoiceField(choices=choices, label="Lifecycle status")
        return form

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        new_status = obj.lifecycle_status
        status_changed = change and "lifecycle_status" in form.changed_data
        if status_changed:
            # Saved through the service so the change lands on the timeline with who and when.
            obj.lifecycle_status = form.initial["lifecycle_status"]
        super().save_model(request, obj, form, change)
        if status_changed:
            change_status(contact=obj, to=new_status, actor=request.user)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for instance in formset.save(commit=False):
            if isinstance(instance, Activity) and instance.pk is None:
                instance.workspace_id = form.instance.workspace_id
                instance.actor = actor_name(request.user)
            instance.save()
        formset.save_m2m()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        contact = self.get_object(request, object_id)
        if contact is not None:
            extra_context = {
                **(extra_context or {}),
                "timeline": timeline_page(contact=contact, page=request.GET.get("timeline_page", 1)),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contact]:
        return super().get_queryset(request).annotate(is_suppressed=Suppression.objects.matching_contact())

    @admin.display(boolean=True, description="suppressed")
    def suppressed(self, obj: Contact) -> bool:
        if hasattr(obj, "is_suppressed"):
            return bool(obj.is_suppressed)
        return Suppression.objects.filter(workspace_id=obj.workspace_id, email_hash=obj.email_hash).exists()

    @admin.display(description="unsubscribe, bounce and complaint history")
    def mailing_history(self, obj: Contact) -> str:
        if obj.pk is None:
            return "-"
        # By contact, and by address hash: entries from an earlier contact with this address that
        # was deleted when it unsubscribed are kept with contact=NULL.
        rows = (
            Activity.objects.filter(workspace_id=obj.workspace_id, kind__in=MAILING_KINDS)
            .filter(Q(contact=obj) | Q(data__email_hash=obj.email_hash))
            .order_by("-occurred_at", "-id")[:50]
        )
        if not rows:
            return "None"
        items = format_html_join(
            "",
            "<li>{} · {} · {}</li>",
            ((a.occurred_at.strftime("%Y-%m-%d %H:%M UTC"), a.get_kind_display(), a.summary) for a in rows),
        )
        return format_html("<ul style='margin:0;padding-left:1.2em'>{}</ul>", items)

    @admin.action(description="Re-subscribe selected contacts (lifts their suppression)")
    def resubscribe_selected(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        actor = f"admin:{request.user.get_username()}"
        count = 0
        for contact in queryset:
            resubscribe(contact=contact, source="admin", actor=actor)
            count += 1
        self.message_user(request, f"Re-subscribed {count} contact(s).")

    @admin.display(description="Balance")
    def balances(self, obj: Contact) -> str:
        if obj.pk is None:
            return "-"
        rows = obj.balances().values()
        return (
            "; ".join(
                f"{b.currency}: charged {b.charged:,.2f}, paid {b.paid:,.2f}, pending {b.pending:,.2f}" for b in rows
            )
            or "-"
        )

    @admin.action(description="Archive selected contacts")
    def archive(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        contacts = list(queryset.not_archived())
        for contact in contacts:
            contact._history_user = request.user  # type: ignore[attr-defined]
            contact.archive()
        self.message_user(request, f"Archived {len(contacts)} contact(s).")

    @admin.action(description="Unarchive selected contacts")
    def unarchive(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        contacts = list(queryset.archived())
        for contact in contacts:
            contact._history_user = request.user  # type: ignore[attr-defined]
            contact.unarchive()
        self.message_user(request, f"Unarchived {len(contacts)} contact(s).")


@admin.register(Suppression)
class SuppressionAdmin(WorkspaceScopedAdmin):
    """Read-only: entries come from unsubscribes, SES and services; the way out is the action."""

    list_display = ["short_hash", "reason", "source", "created_at", "workspace"]
    list_filter = ["workspace", "reason"]
    # The search box takes an email address (hashed per workspace) or the start of a hash.
    search_fields = ["email_hash"]
    search_help_text = "Search by full email address, or by the first characters of the hash."
    readonly_fields = ["workspace", "email_hash", "reason", "source", "created_at"]
    fields = readonly_fields
    actions = ["lift_selected"]

    @admin.display(description="hash", ordering="email_hash")
    def short_hash(self, obj: Suppression) -> str:
        return f"{obj.email_hash[:16]}…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Suppression], search_term: str
    ) -> tuple[QuerySet[Suppression], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            # Only hashes are stored, so hash the address for every workspace the user may see.
            hashes = [suppression_hash(ws_id, term) for ws_id in workspaces_for(request).values_list("pk", flat=True)]
            return queryset.filter(email_hash__in=hashes), False
        if HEX_RE.match(term.lower()):
            return queryset.filter(email_hash__startswith=term.lower()), False
        return queryset.none(), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting would re-subscribe silently; the action records who did it and when.
        return False

    @admin.action(description="Remove from the suppression list (re-subscribe)")
    def lift_selected(self, request: HttpRequest, queryset: QuerySet[Suppression]) -> None:
        actor = f"admin:{request.user.get_username()}"
        count = 0
        for suppression in queryset.select_related("workspace"):
            contact = Contact.objects.filter(workspace=suppression.workspace, email_hash=suppression.email_hash).first()
            if contact is not None:
                resubscribe(contact=contact, source="admin", actor=actor)
            else:
                lift_suppression(
                    workspace=suppression.workspace, email_hash=suppression.email_hash, source="admin", actor=actor
                )
            count += 1
        self.message_user(request, f"Removed {count} address(es) from the suppression list.")
