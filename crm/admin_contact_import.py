"""CSV import and export in the contact admin (the work is done by crm.imports / crm.exports)."""

from __future__ import annotations

import io
from typing import Any

from django import forms as django_forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from contacts.models import Contact
from crm.admin_scoping import workspaces_for
from crm.exports import streaming_response
from crm.imports import ImportFailed, import_contacts
from crm.models import Workspace


class ContactImportForm(django_forms.Form):
    workspace = django_forms.ModelChoiceField(queryset=Workspace.objects.none())
    file = django_forms.FileField(help_text="UTF-8 CSV with a header row: email, name, phone, company, …")
    dry_run = django_forms.BooleanField(required=False, initial=True, help_text="Check and count only; write nothing.")
    phone_region = django_forms.CharField(
        required=False, max_length=2, help_text="Region for phone numbers without +, e.g. MT"
    )


class ContactImportExportMixin:
    """Adds the CSV import page (`import-csv/`) and the `export_csv` action to the contact admin."""

    def get_urls(self) -> list[URLPattern]:
        urls = super().get_urls()  # type: ignore[misc]
        view = self.admin_site.admin_view(self.import_csv_view)  # type: ignore[attr-defined]
        return [path("import-csv/", view, name="contacts_contact_import"), *urls]

    def import_csv_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_add_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        form = ContactImportForm(request.POST or None, request.FILES or None)
        form.fields["workspace"].queryset = workspaces_for(request)
        report, failure = None, ""
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            stream = io.TextIOWrapper(upload.file, encoding="utf-8-sig", errors="surrogateescape", newline="")
            try:
                report = import_contacts(
                    workspace=form.cleaned_data["workspace"],
                    stream=stream,
                    dry_run=form.cleaned_data["dry_run"],
                    phone_region=form.cleaned_data["phone_region"].upper() or None,
                )
            except ImportFailed as exc:
                failure = str(exc)
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": "Import contacts from CSV",
            "form": form,
            "report": report,
            "failure": failure,
            "opts": Contact._meta,
        }
        return TemplateResponse(request, "admin/crm/import_contacts.html", context)

    @admin.action(description="Export selected contacts as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Contact]) -> Any:
        return streaming_response(queryset, filename="contacts.csv")
