"""Every kind of bad input is a 4xx in the error shape naming what is wrong, and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from contacts.models import Contact
from crm.models import Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/"
BATCH = f"{URL}batch/"


@pytest.fixture
def stored(workspace: Workspace) -> Iterator[Contact]:
    """A contact that must come out of every bad request exactly as it went in."""
    contact = ContactFactory(
        workspace=workspace, email="ana@x.com", name="Ana", phone="+35699123456", attributes={"plan": "pro"}
    )
    before = _snapshot()
    yield contact
    assert _snapshot() == before


def _snapshot() -> list[dict[str, Any]]:
    return list(Contact.objects.order_by("pk").values())


def _assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["message"]
    if field is not None:
        assert field in error["fields"], error
        assert field in error["message"]
    return error


@pytest.mark.parametrize("path", [URL, BATCH, f"{URL}ana@x.com/"])
def test_malformed_json_is_a_400_parse_error(api: APIClient, stored: Contact, path: str) -> None:
    method = api.patch if path.endswith("x.com/") else api.post
    response = method(path, data='{"email": "ana@x.com", "name": ', content_type="application/json")

    error = _assert_error(response, 400)
    assert error["code"] == "parse_error"


def test_a_body_that_is_not_utf8_is_a_400(api: APIClient, stored: Contact) -> None:
    response = api.post(URL, data=b'{"email": "\xff\xfe"}', content_type="application/json")

    _assert_error(response, 400)


def test_nan_and_out_of_range_numbers_are_refused(api: APIClient, stored: Contact) -> None:
    for body in (
        '{"email": "ana@x.com", "attributes": {"n": NaN}}',
        '{"email": "ana@x.com", "attributes": {"n": 1e999}}',
    ):
        _assert_error(api.post(URL, data=body, content_type="application/json"), 400)


def test_a_non_json_content_type_is_a_415(api: APIClient, stored: Contact) -> None:
    response = api.post(URL, data="email=ana@x.com&name=Eve", content_type="application/x-www-form-urlencoded")

    error = _assert_error(response, 415)
    assert error["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": 42}, "email"),
        ({"email": ["ana@x.com"]}, "email"),
        ({"email": "ana@x.com", "name": 42}, "name"),
        ({"email": "ana@x.com", "name": {"first": "Ana"}}, "name"),
        ({"email": "ana@x.com", "phone": 35699123456}, "phone"),
        ({"email": "ana@x.com", "status": "maybe"}, "status"),
        ({"email": "ana@x.com", "source": "not a label!"}, "source"),
        ({"email": "ana@x.com", "name": "x" * 201}, "name"),
        ({"email": "ana@x.com", "name": "nul\x00byte"}, "name"),
    ],
)
def test_wrong_types_and_values_are_a_400_naming_the_field(
    api: APIClient, stored: Contact, body: dict[str, Any], field: str
) -> None:
    _assert_error(api.post(URL, body, format="json"), 400, field)
    _assert_error(api.patch(f"{URL}ana@x.com/", body, format="json"), 400, field)


def test_a_body_that_is_not_an_object_is_a_400(api: APIClient, stored: Contact) -> None:
    for body in ("[]", '"ana@x.com"', "42", "null"):
        _assert_error(api.post(URL, data=body, content_type="application/json"), 400)


def test_a_missing_email_is_a_400_naming_it(api: APIClient, stored: Contact) -> None:
    _assert_error(api.post(URL, {"name": "Nobody"}, format="json"), 400, "email")


@pytest.mark.parametrize("field", ["colour", "id", "created_at", "email_key", "workspace"])
def test_unknown_and_read_only_fields_are_a_400_naming_the_field(api: APIClient, stored: Contact, field: str) -> None:
    body = {"email": "ana@x.com", "name": "Changed", field: 1}

    _assert_error(api.post(URL, body, format="json"), 400, field)
    _assert_error(api.patch(f"{URL}ana@x.com/", {"name": "Changed", field: 1}, format="json"), 400, field)


@pytest.mark.parametrize(
    "email",
    ["no-at-sign", "ana@", "@x.com", "ana @x.com", "ana@x..com", "ana@-x.com", "", "   ", "ana@x_y.com", "a@b@x.com"],
)
def test_undeliverable_emails_are_a_400_naming_email(api: APIClient, stored: Contact, email: str) -> None:
    error = _assert_error(api.post(URL, {"email": email, "name": "Eve"}, format="json"), 400, "email")
    assert "email" in error["message"]


@pytest.mark.parametrize("phone", ["12", "not a phone", "+1 555", "9912 3456", "+356 9912 3456 7777 8888 9999"])
def test_invalid_phones_are_a_400_naming_phone(api: APIClient, stored: Contact, phone: str) -> None:
    _assert_error(api.post(URL, {"email": "ana@x.com", "phone": phone}, format="json"), 400, "phone")


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        (["language", "en"], "attributes"),
        ("language=en", "attributes"),
        (42, "attributes"),
        ({"nested": {"a": 1}}, "attributes.nested"),
        ({"bad key": 1}, "attributes.bad key"),
        ({"a.b": 1}, "attributes.a.b"),
        ({"long": "x" * 2001}, "attributes.long"),
        ({"nul": "a\x00b"}, "attributes.nul"),
    ],
)
def test_attributes_must_be_an_object_of_simple_values(
    api: APIClient, stored: Contact, attributes: Any, field: str
) -> None:
    _assert_error(api.post(URL, {"email": "ana@x.com", "attributes": attributes}, format="json"), 400, field)


@pytest.mark.parametrize("path", [URL, BATCH])
def test_a_body_over_5_mb_is_a_413_before_it_is_parsed(api: APIClient, stored: Contact, path: str) -> None:
    filler = "x" * 1000
    if path == BATCH:
        body = json.dumps({"contacts": [{"email": f"p{n}@x.com", "name": filler[:200]} for n in range(30_000)]})
    else:
        body = json.dumps({"email": "ana@x.com", "name": "Eve", "attributes": {f"k{n}": filler for n in range(5300)}})
    assert len(body) > 5 * 1024 * 1024

    error = _assert_error(api.post(path, data=body, content_type="application/json"), 413)
    assert error["code"] == "request_too_large"
    assert "5 MB" in error["message"]


def test_a_body_just_under_the_limit_is_read(api: APIClient, stored: Contact, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    body = json.dumps({"email": "new@x.com", "name": "n" * 100})

    assert api.post(URL, data=body, content_type="application/json").status_code == 201
    Contact.objects.filter(email_key="new@x.com").delete()
    _assert_error(api.post(URL, data=body + " " * 2000, content_type="application/json"), 413)


def test_a_batch_over_1000_items_is_a_400_and_stores_nothing(api: APIClient, stored: Contact) -> None:
    items = [{"email": f"p{n}@x.com"} for n in range(1001)]

    _assert_error(api.post(BATCH, {"contacts": items}, format="json"), 400, "contacts")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"contacts": []}, "contacts"),
        ({"contacts": {"email": "a@x.com"}}, "contacts"),
        ({}, "contacts"),
        ({"contacts": [{"email": "a@x.com"}], "mode": "replace"}, "mode"),
    ],
)
def test_a_malformed_batch_envelope_is_a_400_naming_the_field(
    api: APIClient, stored: Contact, body: dict[str, Any], field: str
) -> None:
    _assert_error(api.post(BATCH, body, format="json"), 400, field)


def test_a_batch_of_only_bad_items_changes_nothing(api: APIClient, stored: Contact) -> None:
    items: list[Any] = [
        {"email": "ana@x.com", "attributes": []},
        {"email": "ana@x.com", "phone": "12"},
        {"email": "bad"},
        "ana@x.com",
        None,
    ]

    response = api.post(BATCH, {"contacts": items}, format="json")

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["error"] * 5
    assert [next(iter(r["error"]["fields"])) for r in response.json()["results"][:3]] == [
        "attributes",
        "phone",
        "email",
    ]


def test_patching_to_an_email_another_contact_has_is_a_400(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com")
    other = ContactFactory(workspace=workspace, email="ben@x.com")
    before = _snapshot()

    _assert_error(api.patch(f"{URL}{other.pk}/", {"email": "ANA@x.com"}, format="json"), 400, "email")

    assert _snapshot() == before
