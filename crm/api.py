"""Plumbing shared by every API app: strict text fields, cursor pagination, the error body's schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request


def check_text(value: str) -> None:
    """Text PostgreSQL can store: UTF-8 encodable (no lone surrogates) and without NUL."""
    if "\x00" in value:
        raise serializers.ValidationError("Null characters are not allowed.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise serializers.ValidationError("Text must be valid Unicode.") from exc


class StrictCharField(serializers.CharField):
    """A string and nothing else: DRF's CharField would quietly turn 42 into "42"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        check_text(data)
        return super().to_internal_value(data)


class StrictCursorPagination(CursorPagination):
    """Newest first, `?limit=` up to 1,000; a malformed cursor is a 400 naming it (DRF says 404)."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except Exception as exc:
            raise serializers.ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from exc


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    """`{"error": {"code", "message", "fields"}}`: the shape of every API error (crm/errors.py)."""

    error = ErrorDetailSerializer()


def error_response(
    description: str, code: str, message: str, fields: dict[str, list[str]] | None = None
) -> OpenApiResponse:
    """An OpenAPI response documenting one error, with an example body in the stable shape."""
    return OpenApiResponse(
        response=ErrorSerializer,
        description=description,
        examples=[OpenApiExample(code, value={"error": {"code": code, "message": message, "fields": fields or {}}})],
    )
