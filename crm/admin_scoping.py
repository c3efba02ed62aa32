"""Staff see and edit only their own workspaces' rows; superusers see everything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from crm.models import Workspace


def workspaces_for(request: HttpRequest) -> QuerySet[Workspace]:
    if request.user.is_superuser:
        return Workspace.objects.all()
    return Workspace.objects.filter(memberships__user=request.user)


class WorkspaceScopedAdmin(admin.ModelAdmin):
    """For models with a path to a workspace. `workspace_path` is the ORM path from the model."""

    workspace_path = "workspace"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        return qs.filter(**{f"{self.workspace_path}__in": workspaces_for(request)})

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        # Django answers a missing object with a redirect to the admin index; another workspace's row
        # is not the staff member's business at all: 404, the same as a row that does not exist.
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404
        return obj

    def get_list_filter(self, request: HttpRequest) -> Sequence[Any]:
        # A plain related filter lists every workspace in the database, leaking their names.
        return [
            (name, admin.RelatedOnlyFieldListFilter) if name == self.workspace_path else name
            for name in super().get_list_filter(request)
        ]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model is Workspace:
            kwargs["queryset"] = workspaces_for(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._allowed(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request, None)

    def _allowed(self, request: HttpRequest, obj: Model | None) -> bool:
        # Membership is the permission: a staff member of a workspace manages its rows.
        if not (request.user.is_active and request.user.is_staff):
            return False
        if request.user.is_superuser or obj is None:
            return True
        return self.get_queryset(request).filter(pk=obj.pk).exists()
