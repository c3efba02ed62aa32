from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from crm.models import ApiKey


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <secret>`. The request's `auth` is the ApiKey, whose workspace scopes
    every query the view makes."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[None, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not secret.strip():
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <api key>'.")
        key = ApiKey.objects.authenticate(secret.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        key.touch()
        return (None, key)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class HasWorkspace(permissions.BasePermission):
    """Allows requests authenticated with an API key; everything else is 401."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiKey)
