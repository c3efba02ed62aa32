from __future__ import annotations

from typing import Any

import pytest
import time_machine
from rest_framework.test import APIClient

from contacts.models import Contact
from crm.models import ApiKey, Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/"


def _client(secret: str | None = None, header: str | None = None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    elif secret is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _assert_401(response: Any) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert set(response.json()["error"]) == {"code", "message", "fields"}


@pytest.mark.parametrize("header", [None, "Bearer trk_00000000_unknown", "Token abc", "Bearer ", "Basic dXNlcjpwYXNz"])
def test_requests_without_a_valid_key_are_401_for_every_endpoint(workspace: Workspace, header: str | None) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@x.com")
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)

    _assert_401(client.get(URL))
    _assert_401(client.post(URL, {"email": "eve@x.com"}, format="json"))
    _assert_401(client.post(f"{URL}batch/", {"contacts": [{"email": "eve@x.com"}]}, format="json"))
    _assert_401(client.get(f"{URL}{contact.pk}/"))
    _assert_401(client.patch(f"{URL}{contact.pk}/", {"name": "Eve"}, format="json"))
    _assert_401(client.delete(f"{URL}ana@x.com/"))
    assert list(Contact.objects.values_list("email", "name")) == [("ana@x.com", contact.name)]


def test_a_revoked_key_is_refused_at_once(workspace: Workspace) -> None:
    key, secret = ApiKey.issue(workspace=workspace, name="signup hook")
    client = _client(secret)
    assert client.get(URL).status_code == 200

    key.revoke()

    response = client.post(URL, {"email": "eve@x.com"}, format="json")
    _assert_401(response)
    assert "revoked" in response.json()["error"]["message"]
    assert not Contact.objects.exists()


def test_using_a_key_records_when_it_was_last_used(workspace: Workspace) -> None:
    key, secret = ApiKey.issue(workspace=workspace)
    assert key.last_used_at is None

    assert _client(secret).get(URL).status_code == 200

    key.refresh_from_db()
    assert key.last_used_at is not None


def _set_rate(settings: Any, rate: str) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": rate},
    }


def test_a_key_over_its_rate_gets_429_with_retry_after(workspace: Workspace, settings: Any) -> None:
    _set_rate(settings, "3/min")
    _, secret = ApiKey.issue(workspace=workspace)
    client = _client(secret)

    with time_machine.travel("2026-11-21 10:00:10Z", tick=False):
        statuses = [client.get(URL).status_code for _ in range(3)]
        throttled = client.post(URL, {"email": "eve@x.com"}, format="json")

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"
    assert int(throttled["Retry-After"]) == 50
    assert not Contact.objects.exists()


def test_the_rate_limit_is_per_key_and_resets_with_the_window(workspace: Workspace, settings: Any) -> None:
    _set_rate(settings, "2/min")
    first = _client(ApiKey.issue(workspace=workspace, name="a")[1])
    second = _client(ApiKey.issue(workspace=workspace, name="b")[1])

    with time_machine.travel("2026-11-21 10:00:59Z", tick=False):
        assert [first.get(URL).status_code for _ in range(3)] == [200, 200, 429]
        assert second.get(URL).status_code == 200
    with time_machine.travel("2026-11-21 10:01:00Z", tick=False):
        assert first.get(URL).status_code == 200
