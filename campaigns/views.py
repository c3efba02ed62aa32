"""The campaign API: a product manages its drips from its own UI. Every query is scoped to the
workspace of the request's API key; another workspace's campaigns are 404 for every verb."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import Campaign, Message
from campaigns.serializers import (
    MAX_ID,
    CampaignDetailSerializer,
    CampaignSerializer,
    CampaignStatsSerializer,
    campaign_stats,
)
from crm.api import StrictCursorPagination, error_response

INVALID = error_response(
    "Invalid input: `fields` names each field at fault (`messages[1].html_body`). Nothing was stored.",
    "invalid",
    "messages[1].html_body: line 3: {{#if name}} is never closed: expected {{/if}}",
    {
        "contact_filter": ["expected a value, found end of filter (at position 9)"],
        "messages[1].html_body": ["line 3: {{#if name}} is never closed: expected {{/if}}"],
        "messages[2].send_day": [
            "Another message already sends on day 2 (messages[1]); send_day is unique in a campaign."
        ],
    },
)
UNAUTHORIZED = error_response(
    "Missing, unknown or revoked API key.", "authentication_failed", "Unknown or revoked API key."
)
NOT_FOUND = error_response("No such campaign in this workspace.", "not_found", "Not found.")
HAS_DELIVERIES = error_response(
    "PUT would delete a message that has deliveries. Nothing was changed.",
    "message_has_deliveries",
    "Not deleting message 12 (send_day 2, 340 deliveries): deleting a message erases its deliveries from the "
    "ledger. Keep it in `messages` (PUT deletes the messages it leaves out), or pause the campaign.",
)
THROTTLED = error_response(
    "Rate limit for this key reached; retry after the `Retry-After` header's seconds.",
    "throttled",
    "Request was throttled. Expected available in 12 seconds.",
)
COMMON = {401: UNAUTHORIZED, 429: THROTTLED}

MESSAGES_EXAMPLE = [
    {
        "id": 11,
        "send_day": 0,
        "subject": "Welcome, {{#if name}}{{name}}{{else}}there{{/if}}",
        "html_body": "<p>Hi {{#if name}}{{name}}{{else}}there{{/if}}, thanks for signing up.</p>",
        "text_body": "",
    },
    {
        "id": 12,
        "send_day": 2,
        "subject": "Getting started with {{attributes.plan}}",
        "html_body": "<p>Here is how to get the most out of it.</p>",
        "text_body": "",
    },
]
CAMPAIGN_EXAMPLE = {
    "id": 7,
    "name": "Welcome",
    "contact_filter": "language=en AND plan in (pro, team)",
    "active": True,
    "send_time": "10:00",
    "time_zone": "Europe/Malta",
    "from_name": "Acme",
    "from_email": "hello@acme.test",
    "reply_to": "",
    "messages": MESSAGES_EXAMPLE,
    "created_at": "2026-11-21T09:00:00Z",
    "updated_at": "2026-11-21T09:00:00Z",
    "last_run_on": "2026-11-21",
    "paused_reason": "",
}
CREATE_EXAMPLE = {
    "name": "Welcome",
    "contact_filter": "language=en AND plan in (pro, team)",
    "active": True,
    "send_time": "10:00",
    "time_zone": "Europe/Malta",
    "messages": [{k: v for k, v in m.items() if k != "id"} for m in MESSAGES_EXAMPLE],
}
PATCH_EXAMPLE = {
    "active": False,
    "messages": [
        {"id": 12, "subject": "Day two: getting started"},
        {"send_day": 5, "subject": "How is it going?", "html_body": "<p>Reply and tell us.</p>"},
    ],
}
STATS_EXAMPLE = {
    "id": 7,
    "enrolled": 120,
    "unsubscribed": 4,
    "deliveries": {"queued": 0, "sending": 0, "sent": 231, "failed": 1, "unknown": 0, "skipped": 3},
    "messages": [
        {
            "id": 11,
            "send_day": 0,
            "deliveries": {"queued": 0, "sending": 0, "sent": 118, "failed": 1, "unknown": 0, "skipped": 1},
        },
        {
            "id": 12,
            "send_day": 2,
            "deliveries": {"queued": 0, "sending": 0, "sent": 113, "failed": 0, "unknown": 0, "skipped": 2},
        },
    ],
}
ID_PARAMETER = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The campaign's id.")
UPDATE_DESCRIPTION = (
    "Messages in `messages`: an item with `id` updates that message, an item without `id` adds one. "
    "PUT replaces the campaign: `name` and `messages` are required (omitted optional fields keep their values), "
    "and messages the list leaves out are deleted, except that a message with deliveries is never deleted "
    "(409, nothing changed). "
    "PATCH changes only what it is given and never deletes a message. Activating a campaign clears "
    "`paused_reason`. Validation is the admin's: filter errors name the position, template errors the line."
)


class CampaignFilter(django_filters.FilterSet):
    active = django_filters.TypedChoiceFilter(
        choices=[("true", "true"), ("false", "false")],
        coerce=lambda value: value == "true",
        help_text="Only active (`true`) or only paused (`false`) campaigns.",
    )

    class Meta:
        model = Campaign
        fields = ["active"]


@extend_schema_view(
    list=extend_schema(
        summary="List campaigns",
        description="Newest first, cursor-paginated (`next` / `previous`; `limit` up to 1000). `?active=true` "
        "lists only active campaigns.",
        responses={200: CampaignSerializer(many=True), 400: INVALID, **COMMON},
    ),
    create=extend_schema(
        summary="Create a campaign with its messages",
        description="The campaign and its messages are stored together or not at all. New campaigns are "
        "inactive unless `active` is true.",
        examples=[
            OpenApiExample("create", value=CREATE_EXAMPLE, request_only=True),
            OpenApiExample("created", value=CAMPAIGN_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
        responses={201: CampaignSerializer, 400: INVALID, **COMMON},
    ),
    retrieve=extend_schema(
        summary="Get a campaign",
        description="Includes `matching`: how many contacts the filter matches right now.",
        parameters=[ID_PARAMETER],
        examples=[OpenApiExample("campaign", value={**CAMPAIGN_EXAMPLE, "matching": 412}, response_only=True)],
        responses={200: CampaignDetailSerializer, 404: NOT_FOUND, **COMMON},
    ),
    update=extend_schema(
        summary="Replace a campaign and its message list",
        description=UPDATE_DESCRIPTION,
        parameters=[ID_PARAMETER],
        examples=[OpenApiExample("campaign", value=CAMPAIGN_EXAMPLE, response_only=True)],
        responses={200: CampaignSerializer, 400: INVALID, 404: NOT_FOUND, 409: HAS_DELIVERIES, **COMMON},
    ),
    partial_update=extend_schema(
        summary="Change some fields of a campaign or some of its messages",
        description=UPDATE_DESCRIPTION,
        parameters=[ID_PARAMETER],
        examples=[
            OpenApiExample("pause and edit", value=PATCH_EXAMPLE, request_only=True),
            OpenApiExample("campaign", value=CAMPAIGN_EXAMPLE, response_only=True),
        ],
        responses={200: CampaignSerializer, 400: INVALID, 404: NOT_FOUND, **COMMON},
    ),
)
class CampaignViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    # No DELETE: deleting a campaign would erase its ledger; pause it with `active: false`.
    http_method_names = ["get", "post", "put", "patch", "head", "options"]
    pagination_class = StrictCursorPagination
    filterset_class = CampaignFilter
    lookup_url_kwarg = "id"
    lookup_value_regex = "[^/]+"

    def get_serializer_class(self) -> type[CampaignSerializer]:
        return CampaignDetailSerializer if self.action == "retrieve" else CampaignSerializer

    def get_queryset(self) -> QuerySet[Campaign]:
        if getattr(self, "swagger_fake_view", False):
            return Campaign.objects.none()
        return (
            self._scoped()
            .select_related("workspace")
            .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("send_day")))
        )

    def _scoped(self) -> QuerySet[Campaign]:
        return Campaign.objects.filter(workspace_id=self.request.auth.workspace_id)

    def get_object(self) -> Campaign:
        value = str(self.kwargs[self.lookup_url_kwarg])
        if not (value.isascii() and value.isdigit() and int(value) <= MAX_ID):
            raise exceptions.NotFound()
        queryset = self.get_queryset()
        if self.action in ("update", "partial_update"):
            # The row lock serialises writers to this campaign and makes the tick skip it meanwhile
            # (it locks with skip_locked), so no delivery appears for a message being deleted.
            queryset = queryset.select_for_update(of=("self",))
        elif self.action == "stats":
            queryset = self._scoped().with_enrollment_counts()
        campaign = queryset.filter(pk=int(value)).first()
        if campaign is None:
            raise exceptions.NotFound()
        self.check_object_permissions(self.request, campaign)
        return campaign

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            return super().update(request, *args, **kwargs)

    @extend_schema(
        summary="Campaign statistics",
        description="Enrolled contacts, enrolled contacts now unsubscribed, and deliveries by status (test sends "
        "excluded), in total and per message.",
        parameters=[ID_PARAMETER],
        examples=[OpenApiExample("stats", value=STATS_EXAMPLE, response_only=True)],
        responses={200: CampaignStatsSerializer, 404: NOT_FOUND, **COMMON},
    )
    @action(detail=True, methods=["get"])
    def stats(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(campaign_stats(self.get_object()))
