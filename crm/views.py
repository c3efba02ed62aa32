"""Staff pages of the customer record: the workspace summary and the missed-payments list.

Scoped like the admin: a staff member sees only workspaces they are a member of (404 otherwise)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from crm import services
from crm.admin_scoping import workspaces_for


@staff_member_required
def summary_index(request: HttpRequest) -> HttpResponse:
    return render(request, "crm/summary_index.html", {"workspaces": workspaces_for(request), "title": "Summary"})


@staff_member_required
def summary(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = get_object_or_404(workspaces_for(request), slug=slug)
    context = services.workspace_summary(workspace=workspace, now=timezone.now())
    return render(request, "crm/summary.html", {**context, "title": f"{workspace.name}: at a glance"})


@staff_member_required
def missed_payments(request: HttpRequest) -> HttpResponse:
    workspaces = workspaces_for(request)
    if request.GET.get("workspace"):
        workspaces = workspaces.filter(slug=request.GET["workspace"])
    now = timezone.now()
    sections = [(workspace, services.missed_payments(workspace=workspace, now=now)) for workspace in workspaces]
    return render(request, "crm/missed_payments.html", {"sections": sections, "title": "Missed payments"})
