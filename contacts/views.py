from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

import crm.schema  # noqa: F401  (registers the API key scheme with drf-spectacular)
from contacts import services
from contacts.filters import ContactFilter
from contacts.models import Contact
from contacts.normalize import email_key
from contacts.serializers import (
    BatchRequestDocSerializer,
    BatchRequestSerializer,
    BatchResponseSerializer,
    ContactSerializer,
    ContactWriteSerializer,
    contact_data,
)
from crm.api import StrictCursorPagination, error_response

MAX_ID = 2**63 - 1


INVALID = error_response(
    "Invalid input: the message and `fields` name each field at fault. Nothing was stored.",
    "invalid",
    "email: Enter a valid email address: An email address must have an @-sign.",
    {"email": ["Enter a valid email address: An email address must have an @-sign."]},
)
UNAUTHORIZED = error_response(
    "Missing, unknown or revoked API key.", "authentication_failed", "Unknown or revoked API key."
)
NOT_FOUND = error_response("No such contact in this workspace.", "not_found", "No Contact matches the given query.")
TOO_LARGE = error_response("Body over 5 MB.", "request_too_large", "The request body is larger than the 5 MB limit.")
THROTTLED = error_response(
    "Rate limit for this key reached; retry after the `Retry-After` header's seconds.",
    "throttled",
    "Request was throttled. Expected available in 12 seconds.",
)
COMMON = {401: UNAUTHORIZED, 429: THROTTLED}
WRITE = {
    400: INVALID,
    413: TOO_LARGE,
    415: error_response("Body is not JSON.", "unsupported_media_type", "Unsupported media type."),
}

CONTACT_EXAMPLE = {
    "id": 42,
    "email": "ana@example.com",
    "name": "Ana Borg",
    "phone": "+35699123456",
    "company": "Acme",
    "attributes": {"language": "en", "plan": "pro"},
    "source": "api",
    "status": "subscribed",
    "created_at": "2026-11-21T09:00:00Z",
    "updated_at": "2026-11-21T09:00:00Z",
}
ID_PARAMETER = OpenApiParameter(
    "id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The contact's numeric id, or its email address (any letter case), e.g. `ana@example.com`.",
)


@extend_schema_view(
    list=extend_schema(
        summary="List contacts",
        description="Newest first, cursor-paginated (`next` / `previous` links). Besides the filters below, "
        "`attributes.<name>=<value>` matches a custom field exactly, e.g. `?attributes.plan=pro&attributes.seats=5`.",
        responses={200: ContactSerializer(many=True), 400: INVALID, **COMMON},
    ),
    retrieve=extend_schema(
        summary="Get a contact by id or email",
        parameters=[ID_PARAMETER],
        responses={200: ContactSerializer, 404: NOT_FOUND, **COMMON},
        examples=[OpenApiExample("contact", value=CONTACT_EXAMPLE, response_only=True)],
    ),
    destroy=extend_schema(
        summary="Delete a contact by id or email",
        description="Removes the contact with its campaign enrollments and queued deliveries.",
        parameters=[ID_PARAMETER],
        responses={204: None, 404: NOT_FOUND, **COMMON},
    ),
)
class ContactViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    serializer_class = ContactSerializer
    pagination_class = StrictCursorPagination
    filterset_class = ContactFilter
    lookup_url_kwarg = "id"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Contact]:
        if getattr(self, "swagger_fake_view", False):
            return Contact.objects.none()
        return Contact.objects.filter(workspace_id=self.request.auth.workspace_id)

    def get_object(self) -> Contact:
        value = str(self.kwargs[self.lookup_url_kwarg])
        queryset = self.get_queryset()
        if value.isascii() and value.isdigit() and int(value) <= MAX_ID:
            queryset = queryset.filter(pk=int(value))
        elif "@" in value and "\x00" not in value and len(value) <= 254:
            queryset = queryset.filter(email_key=email_key(value))
        else:
            raise Http404
        contact = queryset.first()
        if contact is None:
            raise Http404
        return contact

    @extend_schema(
        summary="Create or update a contact (upsert by email)",
        description="201 with the contact when it is new, 200 when a contact with this email (any letter case) "
        "existed. Given fields overwrite; omitted fields are kept. `attributes` merge key by key, and a key "
        "set to `null` is removed. `phone` is stored in E.164.",
        request=ContactWriteSerializer,
        responses={201: ContactSerializer, 200: ContactSerializer, **WRITE, **COMMON},
        examples=[
            OpenApiExample(
                "signup",
                value={
                    "email": "Ana@Example.com",
                    "name": "Ana Borg",
                    "phone": "+356 9912 3456",
                    "attributes": {"language": "en", "plan": "pro"},
                },
                request_only=True,
            ),
            OpenApiExample("contact", value=CONTACT_EXAMPLE, response_only=True),
        ],
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        contact, created = services.upsert_contact(workspace=request.auth.workspace, data=request.data)
        return Response(contact_data(contact), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        summary="Update a contact by id or email",
        description="Only the given fields change; `attributes` merge as in the upsert.",
        parameters=[ID_PARAMETER],
        request=ContactWriteSerializer(partial=True),
        responses={200: ContactSerializer, 404: NOT_FOUND, **WRITE, **COMMON},
        examples=[
            OpenApiExample("change plan", value={"attributes": {"plan": "team", "trial": None}}, request_only=True)
        ],
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        contact = services.update_contact(contact=self.get_object(), data=request.data)
        return Response(contact_data(contact))

    @extend_schema(
        summary="Create or update up to 1,000 contacts",
        description="Each item is upserted as by `POST /contacts/`. The answer has one result per item, in "
        "order: `created`, `updated`, or `error` with the fields at fault. A bad item never blocks the "
        "good ones. More than 1,000 items is a 400 and nothing is stored.",
        request=BatchRequestDocSerializer,
        responses={200: BatchResponseSerializer, **WRITE, **COMMON},
        examples=[
            OpenApiExample(
                "two good, one bad",
                value={
                    "contacts": [
                        {"email": "ana@example.com", "attributes": {"plan": "pro"}},
                        {"email": "ben@example.com", "name": "Ben"},
                        {"email": "not-an-address"},
                    ]
                },
                request_only=True,
            ),
            OpenApiExample(
                "results",
                value={
                    "created": 1,
                    "updated": 1,
                    "errors": 1,
                    "results": [
                        {"index": 0, "status": "updated", "id": 42, "email": "ana@example.com", "error": None},
                        {"index": 1, "status": "created", "id": 43, "email": "ben@example.com", "error": None},
                        {
                            "index": 2,
                            "status": "error",
                            "id": None,
                            "email": None,
                            "error": {
                                "code": "invalid",
                                "message": "email: Enter a valid email address: An email address must have an @-sign.",
                                "fields": {
                                    "email": ["Enter a valid email address: An email address must have an @-sign."]
                                },
                            },
                        },
                    ],
                },
                response_only=True,
            ),
        ],
    )
    @action(detail=False, methods=["post"], filter_backends=[], pagination_class=None)
    def batch(self, request: Request) -> Response:
        envelope = BatchRequestSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        results = services.upsert_contacts(workspace=request.auth.workspace, items=envelope.validated_data["contacts"])
        counts = {"created": 0, "updated": 0, "error": 0}
        rows = []
        for result in results:
            counts[result.status] += 1
            rows.append(
                {
                    "index": result.index,
                    "status": result.status,
                    "id": result.contact.pk if result.contact else None,
                    "email": result.contact.email if result.contact else None,
                    "subscription": result.contact.status if result.contact else None,
                    "error": result.error,
                }
            )
        return Response(
            {"created": counts["created"], "updated": counts["updated"], "errors": counts["error"], "results": rows}
        )
