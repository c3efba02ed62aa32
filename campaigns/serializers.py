"""Validation and shape of campaigns in the API.

Every write runs the same model validation as the admin (`Campaign.full_clean()` and
`Message.full_clean()`, whose `clean()` parse the filter and compile the templates), so a campaign
the API accepts is one the admin would accept. The API is stricter in three ways that protect the
engine: send_day ≤ 3650, at most 100 messages per request, and the filter must also compile as of now.

Message list semantics on update (docs/campaigns-api.md):
- an item with `id` updates that message of this campaign (on PATCH only the given fields);
- an item without `id` creates a message;
- PUT deletes the campaign's messages the list leaves out, and refuses (409) to delete one that
  has deliveries, since that would erase its part of the ledger; PATCH never deletes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.settings import api_settings

from campaigns import filters
from campaigns.models import MAX_SEND_DAY, Campaign, Delivery, Message
from crm.api import StrictCharField
from crm.models import Workspace

MAX_MESSAGES = 100
MAX_ID = 2**63 - 1
READ_ONLY = {"id", "created_at", "updated_at", "last_run_on", "paused_reason", "matching"}
MESSAGE_FIELDS = ("send_day", "subject", "html_body", "text_body")
REQUIRED_MESSAGE_FIELDS = ("send_day", "subject", "html_body")


class StrictMixin:
    """Rejects fields the serializer does not know, naming them, instead of ignoring a typo."""

    writable_ids: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            fields = self.fields  # type: ignore[attr-defined]
            unknown = {
                str(name): ["This field is read-only." if name in READ_ONLY else "Unknown field."]
                for name in data
                if name not in self.writable_ids and (name not in fields or fields[name].read_only)
            }
            if unknown:
                raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)  # type: ignore[misc]


def _django_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    return {
        (api_settings.NON_FIELD_ERRORS_KEY if name == "__all__" else name): list(messages)
        for name, messages in exc.message_dict.items()
    }


def _filter_problem(campaign: Campaign) -> str | None:
    """Compiling as of now too, beyond the admin's parse: a filter that parses but cannot be
    evaluated (a relative date before year 1) would otherwise fail in the tick, not here."""
    try:
        campaign.contact_q(now=timezone.now())
    except filters.FilterError as exc:
        return str(exc)
    except (ValueError, OverflowError) as exc:
        return f"This filter cannot be evaluated: {exc}."
    return None


class MessageSerializer(StrictMixin, serializers.ModelSerializer):
    """One message of a campaign. `id` is given back on update to change that message."""

    writable_ids = frozenset({"id"})

    id = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="Present in responses. On update: give it to change that message, leave it out to add one.",
    )
    send_day = serializers.IntegerField(
        min_value=0,
        max_value=MAX_SEND_DAY,
        help_text="Days after enrollment; 0 sends on the enrollment day. Unique within the campaign.",
    )
    subject = StrictCharField(
        max_length=300, help_text="A template, e.g. `Welcome, {{#if name}}{{name}}{{else}}there{{/if}}`."
    )
    html_body = StrictCharField(
        help_text="A template. An unsubscribe footer is appended unless it uses `{{unsubscribe_url}}`."
    )
    text_body = StrictCharField(
        required=False, allow_blank=True, help_text="A template. Empty: derived from the HTML when sending."
    )

    class Meta:
        model = Message
        fields = ["id", "send_day", "subject", "html_body", "text_body"]


@dataclass
class MessagePlan:
    """What a write does to the campaign's messages, decided during validation."""

    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    delete: list[Message] = field(default_factory=list)


class MessageHasDeliveries(exceptions.APIException):
    status_code = 409
    default_code = "message_has_deliveries"
    default_detail = "A message with deliveries cannot be deleted."


@extend_schema_field({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "example": "10:00"})
class ClockTimeField(serializers.TimeField):
    """A local time of day written "HH:MM" (OpenAPI's `time` format would demand seconds and an offset)."""


class CampaignSerializer(StrictMixin, serializers.ModelSerializer):
    """A campaign with its messages, ordered by send_day."""

    name = StrictCharField(max_length=200)
    contact_filter = StrictCharField(
        required=False,
        allow_blank=True,
        help_text="e.g. `language=en AND plan in (pro, team)`. Empty matches every contact.",
    )
    active = serializers.BooleanField(required=False, help_text="Sends only while true. Default false.")
    send_time = ClockTimeField(
        required=False,
        format="%H:%M",
        input_formats=["%H:%M"],
        help_text='Local time of day the campaign sends, "HH:MM". Default "10:00".',
    )
    time_zone = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="IANA name, e.g. Europe/Malta. Empty: the workspace's.",
    )
    from_name = StrictCharField(required=False, allow_blank=True, max_length=200, help_text="Empty: the workspace's.")
    from_email = serializers.EmailField(required=False, allow_blank=True, help_text="Empty: the workspace's.")
    reply_to = serializers.EmailField(required=False, allow_blank=True)
    messages = MessageSerializer(many=True, required=False, max_length=MAX_MESSAGES)
    paused_reason = serializers.CharField(
        read_only=True, help_text="Why the engine paused the campaign, if it did. Cleared on activation."
    )
    last_run_on = serializers.DateField(
        read_only=True, help_text="The campaign-local date of its last daily run.", allow_null=True
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "contact_filter",
            "active",
            "send_time",
            "time_zone",
            "from_name",
            "from_email",
            "reply_to",
            "messages",
            "created_at",
            "updated_at",
            "last_run_on",
            "paused_reason",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # A list-level problem ("expected a list", too many items) belongs to `messages` itself.
            detail = exc.detail
            if isinstance(detail, dict) and isinstance(detail.get("messages"), dict):
                nested = detail["messages"]
                detail["messages"] = nested.get(api_settings.NON_FIELD_ERRORS_KEY, nested)
            raise

    # ------------------------------------------------------------ validation

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        items = attrs.pop("messages", None)
        candidate = self._candidate(attrs)
        try:
            candidate.full_clean(exclude=["workspace"])
        except DjangoValidationError as exc:
            errors.update(_django_errors(exc))
        if "contact_filter" not in errors:
            problem = _filter_problem(candidate)
            if problem:
                errors["contact_filter"] = [problem]
        if items is None and self.instance is not None and not self.partial:
            errors["messages"] = ["This field is required on PUT, which replaces the list; PATCH leaves it as it is."]
        elif items is not None:
            plan, message_errors = self._plan_messages(items)
            if any(message_errors):
                errors["messages"] = message_errors
            attrs["messages"] = plan
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def _candidate(self, attrs: dict[str, Any]) -> Campaign:
        """The campaign as it would be saved, unsaved, for the model's own validation."""
        candidate = copy.copy(self.instance) if self.instance is not None else Campaign(workspace=self._workspace())
        for name, value in attrs.items():
            setattr(candidate, name, value)
        return candidate

    def _workspace(self) -> Workspace:
        return self.context["request"].auth.workspace

    def _plan_messages(self, items: list[dict[str, Any]]) -> tuple[MessagePlan, list[dict[str, list[str]]]]:
        """Validate the message list against the campaign's current messages; decide what to write."""
        partial = self.partial
        existing: dict[int, Message] = {}
        if self.instance is not None:
            existing = {m.pk: m for m in self.instance.messages.all()}
        errors: list[dict[str, list[str]]] = [{} for _ in items]
        plan = MessagePlan()
        mentioned: dict[int, int] = {}
        final: list[tuple[int, Message]] = []  # (index in items, message as it would be saved)
        for index, item in enumerate(items):
            values = {name: item[name] for name in MESSAGE_FIELDS if name in item}
            message_id = item.get("id")
            if message_id is not None:
                if message_id not in existing:
                    errors[index]["id"] = [
                        f"This campaign has no message {message_id}; leave `id` out to create a message."
                    ]
                    continue
                if message_id in mentioned:
                    errors[index]["id"] = [f"Message {message_id} is already at messages[{mentioned[message_id]}]."]
                    continue
                mentioned[message_id] = index
                message = copy.copy(existing[message_id])
                plan.update.append((existing[message_id], values))
            else:
                missing = [name for name in REQUIRED_MESSAGE_FIELDS if name not in values]
                if missing:
                    # PATCH skips required checks; a new message still needs them.
                    for name in missing:
                        errors[index][name] = ["This field is required."]
                    continue
                message = Message()
                plan.create.append(values)
            for name, value in values.items():
                setattr(message, name, value)
            try:
                message.full_clean(exclude=["campaign"], validate_unique=False, validate_constraints=False)
            except DjangoValidationError as exc:
                errors[index].update(_django_errors(exc))
            final.append((index, message))

        # send_day is unique per campaign: check the state after the write, not each step.
        taken: dict[int, str] = {}
        if partial:
            for pk, message in existing.items():
                if pk not in mentioned:
                    taken[message.send_day] = f"message {pk}"
        else:
            plan.delete = [message for pk, message in sorted(existing.items()) if pk not in mentioned]
        for index, message in final:
            day = message.send_day
            if day in taken:
                errors[index].setdefault("send_day", []).append(
                    f"Another message already sends on day {day} ({taken[day]}); send_day is unique in a campaign."
                )
            else:
                taken[day] = f"messages[{index}]"
        return plan, errors

    # ------------------------------------------------------------ writing

    def create(self, validated_data: dict[str, Any]) -> Campaign:
        plan: MessagePlan = validated_data.pop("messages", None) or MessagePlan()
        with transaction.atomic():
            campaign = Campaign.objects.create(workspace=self._workspace(), **validated_data)
            Message.objects.bulk_create([Message(campaign=campaign, **values) for values in plan.create])
        return campaign

    def update(self, instance: Campaign, validated_data: dict[str, Any]) -> Campaign:
        """Callers hold the campaign's row lock (see CampaignViewSet.update), so the tick cannot
        queue deliveries for a message between the ledger check and its deletion."""
        plan: MessagePlan | None = validated_data.pop("messages", None)
        if validated_data.get("active") and not instance.active:
            instance.paused_reason = ""
        with transaction.atomic():
            for name, value in validated_data.items():
                setattr(instance, name, value)
            instance.save()
            if plan is not None:
                _apply(instance, plan)
        return instance


def _apply(campaign: Campaign, plan: MessagePlan) -> None:
    if plan.delete:
        ids = [m.pk for m in plan.delete]
        sent = dict(
            Delivery.objects.filter(message_id__in=ids)
            .values("message_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("message_id", "n")
        )
        if sent:
            refused = ", ".join(
                f"message {m.pk} (send_day {m.send_day}, {sent[m.pk]} deliveries)" for m in plan.delete if m.pk in sent
            )
            raise MessageHasDeliveries(
                f"Not deleting {refused}: deleting a message erases its deliveries from the ledger. "
                "Keep it in `messages` (PUT deletes the messages it leaves out), or pause the campaign."
            )
        Message.objects.filter(pk__in=ids).delete()
    moving = [(m, values) for m, values in plan.update if values.get("send_day", m.send_day) != m.send_day]
    if moving:
        # Two messages may swap days in one request: park the moving ones on unused days first,
        # since the (campaign, send_day) unique key is checked row by row.
        top = Message.objects.filter(campaign=campaign).aggregate(top=Max("send_day"))["top"] or 0
        park = max(top, *(values["send_day"] for _, values in moving)) + 1
        for offset, (message, _) in enumerate(moving):
            Message.objects.filter(pk=message.pk).update(send_day=park + offset)
    for message, values in plan.update:
        if not values:
            continue
        for name, value in values.items():
            setattr(message, name, value)
        message.save(update_fields=[*values, "updated_at"])
    Message.objects.bulk_create([Message(campaign=campaign, **values) for values in plan.create])


class CampaignDetailSerializer(CampaignSerializer):
    matching = serializers.SerializerMethodField(
        help_text="How many contacts (any status) the filter matches right now; null if it cannot be evaluated."
    )

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "matching"]

    def get_matching(self, campaign: Campaign) -> int | None:
        try:
            return campaign.matching_contacts().count()
        except (filters.FilterError, ValueError, OverflowError):
            return None


# ---------------------------------------------------------------- stats and errors (responses only)


class DeliveryCountsSerializer(serializers.Serializer):
    queued = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    unknown = serializers.IntegerField()
    skipped = serializers.IntegerField()


class MessageStatsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    send_day = serializers.IntegerField()
    deliveries = DeliveryCountsSerializer()


class CampaignStatsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    enrolled = serializers.IntegerField(help_text="Contacts enrolled (deleted contacts leave no enrollment).")
    unsubscribed = serializers.IntegerField(help_text="Enrolled contacts that are now unsubscribed.")
    deliveries = DeliveryCountsSerializer(help_text="Emails by status, test sends excluded.")
    messages = MessageStatsSerializer(many=True, help_text="The same counts per message, by send_day.")


def campaign_stats(campaign: Campaign) -> dict[str, Any]:
    """The stats body from a campaign annotated by `CampaignQuerySet.with_enrollment_counts()`:
    one GROUP BY over the campaign's counted deliveries, one query for its messages."""
    by_message = Delivery.objects.filter(campaign_id=campaign.pk).counted().status_counts_by_message()
    statuses = [value for value, _ in Delivery.Status.choices]
    totals = dict.fromkeys(statuses, 0)
    messages = []
    for message_id, send_day in Message.objects.filter(campaign_id=campaign.pk).values_list("id", "send_day"):
        counts = {status: by_message.get(message_id, {}).get(status, 0) for status in statuses}
        for status, n in counts.items():
            totals[status] += n
        messages.append({"id": message_id, "send_day": send_day, "deliveries": counts})
    return {
        "id": campaign.pk,
        "enrolled": campaign.n_enrolled,
        "unsubscribed": campaign.n_unsubscribed,
        "deliveries": totals,
        "messages": messages,
    }
