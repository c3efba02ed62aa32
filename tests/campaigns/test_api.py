"""The campaign API: nested messages, the admin's validation, tenant isolation, update semantics, stats."""

from __future__ import annotations

import json
from datetime import date, time, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.models import Campaign, Delivery, Message
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import CampaignFactory, ContactFactory, DeliveryFactory, EnrollmentFactory, MessageFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/campaigns/"


def detail(campaign: Campaign | int) -> str:
    return f"{LIST}{getattr(campaign, 'pk', campaign)}/"


def stats_url(campaign: Campaign) -> str:
    return f"{detail(campaign)}stats/"


def message(send_day: int, **extra: Any) -> dict[str, Any]:
    return {
        "send_day": send_day,
        "subject": f"Day {send_day}: hi {{{{#if name}}}}{{{{name}}}}{{{{else}}}}there{{{{/if}}}}",
        "html_body": f"<p>Day {send_day} for {{{{email}}}}.</p>",
        **extra,
    }


def payload(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Welcome",
        "contact_filter": "language=en",
        "active": True,
        "send_time": "09:30",
        "time_zone": "Europe/Malta",
        "from_name": "Acme",
        "from_email": "hello@acme.test",
        "reply_to": "support@acme.test",
        "messages": [message(0), message(2), message(5)],
        **extra,
    }


def fields(response: Any) -> dict[str, list[str]]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["fields"]


@pytest.fixture
def campaign(workspace: Workspace) -> Campaign:
    campaign = CampaignFactory(workspace=workspace, name="Onboarding", time_zone="Europe/Malta")
    for day in (0, 2, 5):
        MessageFactory(campaign=campaign, send_day=day)
    return campaign


def ids_by_day(campaign: Campaign) -> dict[int, int]:
    return dict(Message.objects.filter(campaign=campaign).values_list("send_day", "id"))


# ---------------------------------------------------------------- create, list, retrieve


def test_it_creates_a_campaign_with_its_messages_in_one_request(api: APIClient, workspace: Workspace) -> None:
    response = api.post(LIST, payload(), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    campaign = Campaign.objects.get(pk=body["id"])
    assert campaign.workspace == workspace
    assert (campaign.name, campaign.contact_filter, campaign.send_time, campaign.time_zone) == (
        "Welcome",
        "language=en",
        time(9, 30),
        "Europe/Malta",
    )
    assert (campaign.from_name, campaign.from_email, campaign.reply_to, campaign.active) == (
        "Acme",
        "hello@acme.test",
        "support@acme.test",
        True,
    )
    assert body["send_time"] == "09:30"
    assert [m["send_day"] for m in body["messages"]] == [0, 2, 5]
    assert [m["id"] for m in body["messages"]] == [ids_by_day(campaign)[d] for d in (0, 2, 5)]
    assert body["messages"][1]["subject"] == "Day 2: hi {{#if name}}{{name}}{{else}}there{{/if}}"
    assert set(body) >= {"created_at", "updated_at", "last_run_on", "paused_reason"}


def test_a_campaign_needs_only_a_name_and_gets_the_models_defaults(api: APIClient) -> None:
    response = api.post(LIST, {"name": "Later"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["active"], body["send_time"], body["time_zone"], body["messages"]) == (False, "10:00", "", [])


def test_it_lists_only_this_workspaces_campaigns_newest_first(
    api: APIClient, campaign: Campaign, other_workspace: Workspace
) -> None:
    newer = CampaignFactory(workspace=campaign.workspace, name="Newer", active=False)
    CampaignFactory(workspace=other_workspace, name="Theirs")

    response = api.get(LIST)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [c["id"] for c in results] == [newer.pk, campaign.pk]
    assert [m["send_day"] for m in results[1]["messages"]] == [0, 2, 5]
    assert "matching" not in results[0]
    active_only = api.get(LIST, {"active": "true"}).json()["results"]
    assert [c["id"] for c in active_only] == [campaign.pk]
    paused_only = api.get(LIST, {"active": "false"}).json()["results"]
    assert [c["id"] for c in paused_only] == [newer.pk]
    assert list(fields(api.get(LIST, {"active": "maybe"}))) == ["active"]


def test_the_list_is_cursor_paginated(api: APIClient, workspace: Workspace) -> None:
    made = [CampaignFactory(workspace=workspace).pk for _ in range(3)]

    first = api.get(LIST, {"limit": 2}).json()
    second = api.get(first["next"]).json()

    assert [c["id"] for c in first["results"]] == made[::-1][:2]
    assert [c["id"] for c in second["results"]] == made[:1]
    assert api.get(LIST, {"cursor": "garbage"}).status_code == 400


def test_retrieve_shows_how_many_contacts_match_now(api: APIClient, campaign: Campaign) -> None:
    ContactFactory(workspace=campaign.workspace, attributes={"language": "en"})
    ContactFactory(workspace=campaign.workspace, attributes={"language": "en"}, status=Contact.Status.UNSUBSCRIBED)
    ContactFactory(workspace=campaign.workspace, attributes={"language": "fr"})
    ContactFactory(attributes={"language": "en"})  # another workspace

    response = api.get(detail(campaign))

    assert response.status_code == 200
    body = response.json()
    assert body["matching"] == 2
    assert (body["name"], [m["send_day"] for m in body["messages"]]) == ("Onboarding", [0, 2, 5])


# ---------------------------------------------------------------- validation (the admin's rules)


def test_a_filter_error_names_the_field_and_the_position(api: APIClient) -> None:
    response = api.post(LIST, payload(contact_filter="language = en AND"), format="json")

    assert response.status_code == 400
    errors = fields(response)
    assert list(errors) == ["contact_filter"]
    assert "position 17" in errors["contact_filter"][0]
    assert response.json()["error"]["code"] == "invalid"
    assert not Campaign.objects.exists()


@pytest.mark.parametrize("field", ["subject", "html_body", "text_body"])
def test_a_template_error_names_the_message_the_field_and_the_line(api: APIClient, field: str) -> None:
    broken = message(2, **{field: "first line\n{{#if name}}never closed"})

    response = api.post(LIST, payload(messages=[message(0), broken]), format="json")

    assert response.status_code == 400
    errors = fields(response)
    assert list(errors) == [f"messages[1].{field}"]
    assert "line 2" in errors[f"messages[1].{field}"][0]
    assert not Campaign.objects.exists() and not Message.objects.exists()


def test_an_unknown_template_variable_is_refused(api: APIClient) -> None:
    response = api.post(LIST, payload(messages=[message(0, subject="Hi {{password}}")]), format="json")

    assert response.status_code == 400
    assert "password" in fields(response)["messages[0].subject"][0]


def test_a_duplicate_send_day_names_the_later_message(api: APIClient) -> None:
    response = api.post(LIST, payload(messages=[message(0), message(3), message(3)]), format="json")

    assert response.status_code == 400
    errors = fields(response)
    assert list(errors) == ["messages[2].send_day"]
    assert "messages[1]" in errors["messages[2].send_day"][0]


@pytest.mark.parametrize("send_day", [-1, 3651, "soon", None, 1.5])
def test_send_day_must_be_a_whole_number_of_days_from_zero(api: APIClient, send_day: Any) -> None:
    response = api.post(LIST, payload(messages=[message(0), {**message(1), "send_day": send_day}]), format="json")

    assert response.status_code == 400
    assert list(fields(response)) == ["messages[1].send_day"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"send_time": "25:00"}, "send_time"),
        ({"send_time": "9am"}, "send_time"),
        ({"from_email": "not-an-address"}, "from_email"),
        ({"reply_to": 42}, "reply_to"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"active": "maybe"}, "active"),
        ({"messages": "day 0"}, "messages"),
        ({"messages": [message(d) for d in range(101)]}, "messages"),
        ({"messages": [42]}, "messages[0].non_field_errors"),
        ({"messages": [{"send_day": 0, "subject": "Hi"}]}, "messages[0].html_body"),
        ({"messages": [message(0, html_body="")]}, "messages[0].html_body"),
        ({"messages": [message(0, subject="x" * 301)]}, "messages[0].subject"),
    ],
)
def test_invalid_fields_are_named(api: APIClient, extra: dict[str, Any], field: str) -> None:
    response = api.post(LIST, payload(**extra), format="json")

    assert response.status_code == 400
    assert field in fields(response), fields(response)
    assert not Campaign.objects.exists()


def test_a_filter_that_parses_but_cannot_be_evaluated_is_refused(api: APIClient) -> None:
    response = api.post(LIST, payload(contact_filter="created_at > -999999w"), format="json")

    assert response.status_code == 400
    assert list(fields(response)) == ["contact_filter"]


def test_an_invalid_time_zone_says_what_is_expected(api: APIClient) -> None:
    response = api.post(LIST, payload(time_zone="Europe/Atlantis"), format="json")

    assert response.status_code == 400
    assert "IANA" in fields(response)["time_zone"][0]


def test_unknown_and_read_only_fields_are_refused_by_name(api: APIClient) -> None:
    response = api.post(
        LIST, payload(colour="blue", paused_reason="x", messages=[message(0, tone="warm")]), format="json"
    )

    assert response.status_code == 400
    errors = fields(response)
    assert errors["colour"] == ["Unknown field."]
    assert errors["paused_reason"] == ["This field is read-only."]
    response = api.post(LIST, payload(messages=[message(0, tone="warm")]), format="json")
    assert fields(response) == {"messages[0].tone": ["Unknown field."]}


def test_a_new_campaign_cannot_claim_existing_message_ids(api: APIClient, campaign: Campaign) -> None:
    existing = campaign.messages.first()
    assert existing is not None

    response = api.post(LIST, payload(messages=[message(0, id=existing.pk)]), format="json")

    assert response.status_code == 400
    assert list(fields(response)) == ["messages[0].id"]
    assert Message.objects.filter(campaign=campaign).count() == 3


@pytest.mark.parametrize(
    "raw",
    [
        "[]",
        '"campaign"',
        "null",
        "42",
        '{"name": null}',
        '{"name": "x\\u0000y"}',
        '{"name": "x\\ud800y"}',
        '{"name": "ok", "messages": [null]}',
        '{"name": "ok", "messages": [[]]}',
        '{"name": "ok", "messages": {"send_day": 0}}',
        '{"name": "ok", "messages": [{"id": 99999999999999999999999, "send_day": 0}]}',
        '{"name": "ok", "messages": [{"send_day": 1e400, "subject": "a", "html_body": "b"}]}',
        '{"name": "ok", "contact_filter": "created_at > -999999w AND ((((("}',
        '{"name": "ok", "contact_filter": {"language": "en"}}',
        '{"name": "ok", "send_time": 930}',
        '{"name": "ok", "time_zone": ["UTC"]}',
        '{"name": "ok", "messages": [{"send_day": 0, "subject": "a", "html_body": "\\u0000"}]}',
        "{not json",
    ],
)
def test_no_input_causes_a_server_error(api: APIClient, raw: str) -> None:
    response = api.post(LIST, data=raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert not Campaign.objects.exists()


# ---------------------------------------------------------------- tenant isolation


def test_another_workspaces_campaign_is_not_found_for_every_verb(other_api: APIClient, campaign: Campaign) -> None:
    day = DeliveryFactory(enrollment=EnrollmentFactory(campaign=campaign), message=campaign.messages.first())
    assert day.pk

    assert other_api.get(LIST).json()["results"] == []
    assert other_api.get(detail(campaign)).status_code == 404
    assert other_api.get(stats_url(campaign)).status_code == 404
    assert other_api.patch(detail(campaign), {"name": "Mine now"}, format="json").status_code == 404
    put = other_api.put(detail(campaign), payload(messages=[]), format="json")
    assert put.status_code == 404
    assert put.json()["error"]["code"] == "not_found"

    campaign.refresh_from_db()
    assert campaign.name == "Onboarding"
    assert Message.objects.filter(campaign=campaign).count() == 3


def test_a_message_id_of_another_campaign_is_refused(
    api: APIClient, campaign: Campaign, other_workspace: Workspace
) -> None:
    foreign = MessageFactory(campaign=CampaignFactory(workspace=other_workspace), send_day=9)

    response = api.patch(detail(campaign), {"messages": [{"id": foreign.pk, "subject": "Hijacked"}]}, format="json")

    assert response.status_code == 400
    assert list(fields(response)) == ["messages[0].id"]
    foreign.refresh_from_db()
    assert foreign.subject != "Hijacked"


def test_requests_without_a_key_are_refused(campaign: Campaign) -> None:
    response = APIClient().get(LIST)

    assert response.status_code == 401
    assert "error" in response.json()


@pytest.mark.parametrize("lookup", ["abc", "99999999999999999999999", "0", "1.5", "%00"])
def test_an_impossible_id_is_a_404_not_an_error(api: APIClient, lookup: str) -> None:
    assert api.get(f"{LIST}{lookup}/").status_code == 404


def test_campaigns_cannot_be_deleted_through_the_api(api: APIClient, campaign: Campaign) -> None:
    assert api.delete(detail(campaign)).status_code == 405
    assert Campaign.objects.filter(pk=campaign.pk).exists()


# ---------------------------------------------------------------- update semantics


def test_patch_changes_given_fields_and_messages_and_keeps_the_rest(api: APIClient, campaign: Campaign) -> None:
    before = ids_by_day(campaign)

    response = api.patch(
        detail(campaign),
        {
            "send_time": "08:15",
            "messages": [{"id": before[2], "subject": "Day two"}, message(7)],
        },
        format="json",
    )

    assert response.status_code == 200, response.json()
    campaign.refresh_from_db()
    assert (campaign.send_time, campaign.name, campaign.contact_filter) == (time(8, 15), "Onboarding", "language=en")
    after = ids_by_day(campaign)
    assert set(after) == {0, 2, 5, 7}
    assert {after[d] for d in (0, 2, 5)} == set(before.values())
    changed = Message.objects.get(pk=before[2])
    assert changed.subject == "Day two" and changed.html_body.startswith("<p>Hi")
    assert [m["send_day"] for m in response.json()["messages"]] == [0, 2, 5, 7]


def test_put_replaces_the_message_list(api: APIClient, campaign: Campaign) -> None:
    before = ids_by_day(campaign)
    body = payload(messages=[message(1, id=before[0]), message(3)])

    response = api.put(detail(campaign), body, format="json")

    assert response.status_code == 200, response.json()
    after = ids_by_day(campaign)
    assert set(after) == {1, 3}
    assert after[1] == before[0]
    assert not Message.objects.filter(pk__in=[before[2], before[5]]).exists()
    campaign.refresh_from_db()
    assert (campaign.name, campaign.send_time) == ("Welcome", time(9, 30))


def test_put_requires_complete_message_items(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)

    response = api.put(detail(campaign), payload(messages=[{"id": days[0], "subject": "Only this"}]), format="json")

    assert response.status_code == 400
    assert set(fields(response)) == {"messages[0].send_day", "messages[0].html_body"}
    assert Message.objects.filter(campaign=campaign).count() == 3


def test_put_requires_the_message_list(api: APIClient, campaign: Campaign) -> None:
    body = payload()
    del body["messages"]

    response = api.put(detail(campaign), body, format="json")

    assert response.status_code == 400
    assert list(fields(response)) == ["messages"]
    assert Message.objects.filter(campaign=campaign).count() == 3


def test_put_refuses_to_delete_a_message_that_has_deliveries(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)
    sent = Message.objects.get(pk=days[2])
    DeliveryFactory(enrollment=EnrollmentFactory(campaign=campaign), message=sent, status=Delivery.Status.SENT)

    response = api.put(detail(campaign), payload(name="Renamed", messages=[message(0, id=days[0])]), format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "message_has_deliveries"
    assert f"message {sent.pk} (send_day 2, 1 deliveries)" in error["message"]
    # Nothing changed: not the other deletion, not the campaign's fields.
    assert ids_by_day(campaign) == days
    campaign.refresh_from_db()
    assert campaign.name == "Onboarding"
    assert Delivery.objects.filter(message=sent).count() == 1


def test_patch_never_deletes_messages(api: APIClient, campaign: Campaign) -> None:
    response = api.patch(detail(campaign), {"messages": []}, format="json")

    assert response.status_code == 200
    assert Message.objects.filter(campaign=campaign).count() == 3


def test_two_messages_can_swap_days_in_one_request(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)

    response = api.patch(
        detail(campaign),
        {"messages": [{"id": days[2], "send_day": 5}, {"id": days[5], "send_day": 2}]},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert ids_by_day(campaign) == {0: days[0], 2: days[5], 5: days[2]}


def test_patch_refuses_a_day_an_untouched_message_already_has(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)

    response = api.patch(detail(campaign), {"messages": [message(5)]}, format="json")

    assert response.status_code == 400
    errors = fields(response)
    assert list(errors) == ["messages[0].send_day"]
    assert f"message {days[5]}" in errors["messages[0].send_day"][0]


def test_a_message_cannot_be_listed_twice(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)

    response = api.patch(
        detail(campaign), {"messages": [{"id": days[0], "send_day": 1}, {"id": days[0], "send_day": 4}]}, format="json"
    )

    assert response.status_code == 400
    assert list(fields(response)) == ["messages[1].id"]


def test_patch_validates_the_campaign_as_it_would_be_saved(api: APIClient, campaign: Campaign) -> None:
    days = ids_by_day(campaign)

    response = api.patch(
        detail(campaign),
        {"contact_filter": "plan in (pro", "messages": [{"id": days[5], "html_body": "{{/if}}"}]},
        format="json",
    )

    assert response.status_code == 400
    assert set(fields(response)) == {"contact_filter", "messages[0].html_body"}
    campaign.refresh_from_db()
    assert campaign.contact_filter == "language=en"


def test_activating_a_paused_campaign_clears_the_pause_reason(api: APIClient, campaign: Campaign) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(active=False, paused_reason="Filter no longer compiles")

    response = api.patch(detail(campaign), {"active": True}, format="json")

    assert response.status_code == 200
    assert response.json()["paused_reason"] == ""
    campaign.refresh_from_db()
    assert campaign.active and campaign.paused_reason == ""


# ---------------------------------------------------------------- stats


def test_stats_count_enrollments_and_deliveries_by_status_and_message(
    api: APIClient, campaign: Campaign, django_assert_max_num_queries: Any
) -> None:
    days = ids_by_day(campaign)
    messages = {m.send_day: m for m in campaign.messages.all()}
    enrolled_on = date(2026, 11, 1)
    people = [EnrollmentFactory(campaign=campaign, enrolled_on=enrolled_on) for _ in range(4)]
    Contact.objects.filter(pk=people[3].contact_id).update(status=Contact.Status.UNSUBSCRIBED)
    plan = [
        (people[0], 0, Delivery.Status.SENT),
        (people[1], 0, Delivery.Status.SENT),
        (people[2], 0, Delivery.Status.FAILED),
        (people[3], 0, Delivery.Status.SKIPPED),
        (people[0], 2, Delivery.Status.SENT),
        (people[1], 2, Delivery.Status.UNKNOWN),
        (people[0], 5, Delivery.Status.QUEUED),
        (people[1], 5, Delivery.Status.SENDING),
    ]
    for enrollment, day, status in plan:
        DeliveryFactory(
            enrollment=enrollment,
            message=messages[day],
            status=status,
            scheduled_on=enrolled_on + timedelta(days=day),
        )
    # A test send and another campaign's emails are not counted.
    DeliveryFactory(
        enrollment=None,
        contact=None,
        campaign=campaign,
        message=messages[0],
        is_test=True,
        status="sent",
        scheduled_on=None,
    )
    DeliveryFactory(enrollment=EnrollmentFactory(campaign=CampaignFactory(workspace=campaign.workspace)))

    with django_assert_max_num_queries(5):
        response = api.get(stats_url(campaign))

    assert response.status_code == 200
    body = response.json()
    zero = {s: 0 for s in ("queued", "sending", "sent", "failed", "unknown", "skipped")}
    assert body == {
        "id": campaign.pk,
        "enrolled": 4,
        "unsubscribed": 1,
        "deliveries": {**zero, "queued": 1, "sending": 1, "sent": 3, "failed": 1, "unknown": 1, "skipped": 1},
        "messages": [
            {"id": days[0], "send_day": 0, "deliveries": {**zero, "sent": 2, "failed": 1, "skipped": 1}},
            {"id": days[2], "send_day": 2, "deliveries": {**zero, "sent": 1, "unknown": 1}},
            {"id": days[5], "send_day": 5, "deliveries": {**zero, "queued": 1, "sending": 1}},
        ],
    }


def test_stats_of_a_new_campaign_are_zeros(api: APIClient, campaign: Campaign) -> None:
    body = api.get(stats_url(campaign)).json()

    assert (body["enrolled"], body["unsubscribed"], set(body["deliveries"].values())) == (0, 0, {0})
    assert [m["send_day"] for m in body["messages"]] == [0, 2, 5]


def test_the_schema_documents_the_campaign_endpoints(api: APIClient) -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)

    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/campaigns/"])
    assert {"get", "put", "patch"} <= set(paths["/api/v1/campaigns/{id}/"])
    assert "409" in paths["/api/v1/campaigns/{id}/"]["put"]["responses"]
    assert "get" in paths["/api/v1/campaigns/{id}/stats/"]
    assert json.dumps(schema, default=str)


def test_a_nul_character_in_a_message_is_a_400_naming_the_field(api: Any) -> None:
    response = api.post(
        "/api/v1/campaigns/",
        {"name": "N", "messages": [{"send_day": 0, "subject": "Hi\x00", "html_body": "<p>x</p>"}]},
        format="json",
    )

    assert response.status_code == 400
    assert "messages[0].subject" in response.json()["error"]["fields"]
