from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.test import Client, override_settings

from contacts.models import Contact
from crm.models import Activity, Consent, Form, FormSubmission, Workspace
from tests.factories import ContactFactory, FormFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ORIGIN = "https://www.acme.example"


@pytest.fixture
def form(workspace: Workspace) -> Form:
    return FormFactory(workspace=workspace, slug="pricing_wizard", name="Pricing wizard")


def post_json(client: Client, form: Form, data: Any, **headers: str) -> Any:
    return client.post(
        f"/f/{form.key}/", data=json.dumps(data), content_type="application/json", headers={"Origin": ORIGIN, **headers}
    )


def test_a_new_address_creates_a_contact_tagged_with_the_form(client: Client, form: Form) -> None:
    response = post_json(
        client, form, {"email": "Ana@Example.com", "name": "Ana", "phone": "+356 9912 3456", "plan": "pro"}
    )

    assert response.status_code == 200, response.content
    contact = Contact.objects.get(workspace=form.workspace)
    assert (contact.email, contact.name, contact.phone) == ("Ana@example.com", "Ana", "+35699123456")
    assert contact.source == "pricing_wizard"
    assert contact.attributes == {"plan": "pro"}
    # What a campaign filter `source=pricing_wizard` selects.
    assert list(Contact.objects.filter(workspace=form.workspace, source="pricing_wizard")) == [contact]


def test_it_fills_only_empty_fields_and_never_overwrites_what_is_known(client: Client, form: Form) -> None:
    known = ContactFactory(
        workspace=form.workspace,
        email="ana@example.com",
        name="Ana Known",
        company="",
        source="api",
        attributes={"plan": "basic"},
    )

    response = post_json(
        client,
        form,
        {"email": "ANA@example.com", "name": "Someone Else", "company": "Acme", "plan": "pro", "budget": "5k"},
    )

    assert response.status_code == 200
    known.refresh_from_db()
    assert known.name == "Ana Known"
    assert known.company == "Acme"
    assert known.source == "api"
    assert known.attributes == {"plan": "basic", "budget": "5k"}
    assert Contact.objects.filter(workspace=form.workspace).count() == 1


def test_it_keeps_the_whole_submission_and_puts_it_on_the_timeline(client: Client, form: Form) -> None:
    post_json(client, form, {"email": "ana@example.com", "message": "Call me", "_gotcha": ""}, **{"User-Agent": "UA/1"})

    submission = FormSubmission.objects.get()
    assert submission.form == form and submission.contact.email == "ana@example.com"
    assert submission.data == {"email": "ana@example.com", "message": "Call me"}
    assert submission.ip == "127.0.0.1" and submission.user_agent == "UA/1"
    activity = Activity.objects.for_contact(submission.contact_id).get()
    assert activity.kind == Activity.Kind.FORM_SUBMISSION
    assert activity.data["fields"]["message"] == "Call me"
    assert activity.actor == "form:pricing_wizard"


@pytest.mark.parametrize(
    ("sent", "granted"),
    [({"consent": "yes"}, True), ({"consent": "on"}, True), ({"consent": True}, True), ({"consent": "no"}, False)],
)
def test_consent_is_granted_only_by_an_explicit_yes(client: Client, form: Form, sent: dict, granted: bool) -> None:
    post_json(client, form, {"email": "ana@example.com", **sent})

    consent = Consent.objects.get()
    assert consent.granted is granted
    assert consent.text_shown == form.consent_text
    assert consent.form == form and consent.ip == "127.0.0.1" and consent.recorded_at is not None
    assert consent.submission == FormSubmission.objects.get()


def test_a_missing_consent_field_is_not_consent(client: Client, form: Form) -> None:
    # A pre-ticked box the visitor never touched is no evidence; only a value sent by the form counts,
    # and the absence of one is recorded as "not granted", not assumed.
    post_json(client, form, {"email": "ana@example.com"})

    consent = Consent.objects.get()
    assert consent.granted is False and consent.value_received == ""


def test_consent_is_recorded_per_submission(client: Client, form: Form) -> None:
    post_json(client, form, {"email": "ana@example.com"})
    post_json(client, form, {"email": "ana@example.com", "consent": "yes"})

    assert list(Consent.objects.order_by("id").values_list("granted", flat=True)) == [False, True]


def test_form_encoded_posts_work_and_can_redirect_to_a_thank_you_page(client: Client, form: Form) -> None:
    form.redirect_url = "https://www.acme.example/thanks"
    form.save()

    response = client.post(f"/f/{form.key}/", {"email": "bo@example.com", "consent": "on"}, headers={"Origin": ORIGIN})

    assert response.status_code == 303 and response["Location"] == "https://www.acme.example/thanks"
    assert Consent.objects.get().granted is True


def test_a_filled_honeypot_looks_accepted_but_stores_nothing(client: Client, form: Form) -> None:
    real = post_json(client, form, {"email": "real@example.com"})
    bot = post_json(client, form, {"email": "bot@example.com", "_gotcha": "http://spam.example"})

    assert bot.status_code == real.status_code == 200
    assert bot.json() == real.json()
    assert not Contact.objects.filter(email_key="bot@example.com").exists()
    assert FormSubmission.objects.count() == 1


@override_settings(FORM_RATE_LIMIT="3/min")
@time_machine.travel(datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC), tick=False)  # one fixed window
def test_it_rate_limits_per_ip_with_retry_after(client: Client, form: Form) -> None:
    statuses = [post_json(client, form, {"email": f"p{i}@example.com"}).status_code for i in range(3)]
    limited = post_json(client, form, {"email": "p9@example.com"})
    other_ip = client.post(
        f"/f/{form.key}/",
        data=json.dumps({"email": "q@example.com"}),
        content_type="application/json",
        headers={"Origin": ORIGIN},
        REMOTE_ADDR="10.0.0.2",
    )

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited["Retry-After"] == "45"
    assert limited.json()["error"]["code"] == "throttled"
    assert other_ip.status_code == 200
    assert not Contact.objects.filter(email_key="p9@example.com").exists()


def test_the_preflight_allows_only_the_forms_origins(client: Client, form: Form) -> None:
    allowed = client.options(f"/f/{form.key}/", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    other = client.options(f"/f/{form.key}/", headers={"Origin": "https://evil.example"})

    assert allowed.status_code == 204
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert "Idempotency-Key" in allowed["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in other


def test_a_post_from_another_origin_is_refused_without_cors_headers(client: Client, form: Form) -> None:
    response = client.post(
        f"/f/{form.key}/",
        data=json.dumps({"email": "ana@example.com"}),
        content_type="application/json",
        headers={"Origin": "https://evil.example"},
    )

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response
    assert not Contact.objects.exists()


def test_an_allowed_origin_gets_its_own_origin_back_never_a_wildcard(client: Client, form: Form) -> None:
    response = post_json(client, form, {"email": "ana@example.com"})

    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in [v.strip() for v in response["Vary"].split(",")]


def test_unknown_and_inactive_keys_are_404(client: Client, form: Form) -> None:
    assert client.post("/f/nope/", {"email": "a@example.com"}).status_code == 404
    form.active = False
    form.save()
    assert post_json(client, form, {"email": "a@example.com"}).status_code == 404


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "No email"}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "ana@example.com", "phone": "12"}, "phone"),
        ({"email": "ana@example.com", "name": "x" * 201}, "name"),
        ({"email": "ana@example.com", "nested": {"a": 1}}, "nested"),
        ({"email": "ana@example.com", "note": "bad\u0000text"}, "note"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client: Client, form: Form, data: dict, field: str) -> None:
    response = post_json(client, form, data)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not Contact.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe\xfa not utf-8", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"email": NaN}', "application/json"),
        (b"[" * 60_000, "application/json"),
        (b'{"email": "\\ud800@example.com"}', "application/json"),
        (b"email=a%40example.com", "application/xml"),
    ],
)
def test_hostile_bodies_are_4xx_never_500(client: Client, form: Form, body: bytes, content_type: str) -> None:
    response = client.post(f"/f/{form.key}/", data=body, content_type=content_type, headers={"Origin": ORIGIN})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_a_huge_body_is_refused_before_it_is_read(client: Client, form: Form) -> None:
    response = post_json(client, form, {"email": "ana@example.com", "blob": "x" * 200_000})

    assert response.status_code == 413
    assert not Contact.objects.exists()


def test_a_form_only_writes_into_its_own_workspace(client: Client, form: Form, other_workspace: Workspace) -> None:
    theirs = ContactFactory(workspace=other_workspace, email="ana@example.com", name="")

    post_json(client, form, {"email": "ana@example.com", "name": "Ana"})

    theirs.refresh_from_db()
    assert theirs.name == ""
    assert Contact.objects.get(workspace=form.workspace).name == "Ana"
    assert not FormSubmission.objects.filter(workspace=other_workspace).exists()


def test_staff_see_only_their_workspaces_forms_and_submissions(
    client: Client, form: Form, other_workspace: Workspace
) -> None:
    theirs = FormFactory(workspace=other_workspace, name="Their giveaway", slug="giveaway")
    post_json(client, form, {"email": "ours@example.com"})
    client.post(f"/f/{theirs.key}/", json.dumps({"email": "theirs@example.com"}), content_type="application/json")
    user = UserFactory()
    MembershipFactory(user=user, workspace=form.workspace)
    staff = Client()
    staff.force_login(user)

    forms_page = staff.get("/admin/crm/form/").content.decode()
    submissions_page = staff.get("/admin/crm/formsubmission/").content.decode()

    assert "Pricing wizard" in forms_page and "Their giveaway" not in forms_page
    assert "ours@example.com" in submissions_page and "theirs@example.com" not in submissions_page
    assert staff.get(f"/admin/crm/form/{theirs.pk}/change/").status_code in (302, 403, 404)


def test_a_form_does_not_bring_back_an_address_that_unsubscribed(client: Client, form: Form) -> None:
    from contacts.unsubscribe import unsubscribe

    unsubscribe(contact=ContactFactory(workspace=form.workspace, email="gone@example.com"), source="test")

    response = post_json(client, form, {"email": "gone@example.com", "name": "Gone"})

    assert response.status_code in (200, 201)
    assert Contact.objects.get(email_key="gone@example.com").status == "unsubscribed"
