from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from contacts.models import Contact
from crm.idempotency import purge_expired
from crm.models import ApiKey, FormSubmission, IdempotencyRecord, Workspace
from tests.crm import urls_idempotency
from tests.factories import FormFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.crm.urls_idempotency")]

URL = "/api/v1/test-contacts/"


def post(api: APIClient, body: dict[str, Any], key: str = "key-1") -> Any:
    return api.post(URL, body, format="json", headers={"Idempotency-Key": key})


def test_the_same_key_and_body_replay_the_stored_response(api: APIClient) -> None:
    first = post(api, {"email": "ana@example.com"})
    second = post(api, {"email": "ana@example.com"})

    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second["Content-Type"] == first["Content-Type"] == "application/json"
    assert second["Idempotent-Replayed"] == "true"
    assert Contact.objects.count() == 1


def test_the_same_key_with_a_different_body_is_a_422(api: APIClient) -> None:
    post(api, {"email": "ana@example.com"})
    response = post(api, {"email": "bo@example.com"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert set(error) == {"code", "message", "fields"} and "Idempotency-Key" in error["fields"]
    assert Contact.objects.count() == 1


def test_a_key_is_honoured_for_24_hours_and_then_forgotten(api: APIClient) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        post(api, {"email": "ana@example.com"})
    with time_machine.travel(start + timedelta(hours=23, minutes=59), tick=False):
        assert post(api, {"email": "bo@example.com"}).status_code == 422
    with time_machine.travel(start + timedelta(hours=24, seconds=1), tick=False):
        again = post(api, {"email": "bo@example.com"})

    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again
    assert Contact.objects.count() == 2


def test_keys_are_scoped_per_workspace(api: APIClient, other_api: APIClient, workspace: Workspace) -> None:
    ours = post(api, {"email": "ana@example.com"})
    theirs = post(other_api, {"email": "ana@example.com"})
    _, second_secret = ApiKey.issue(workspace=workspace, name="second key")
    same_workspace = APIClient()
    same_workspace.credentials(HTTP_AUTHORIZATION=f"Bearer {second_secret}")

    assert ours.status_code == theirs.status_code == 201
    assert ours.json()["id"] != theirs.json()["id"]
    # Another key of the same workspace shares the namespace: the retry is recognised.
    assert post(same_workspace, {"email": "ana@example.com"})["Idempotent-Replayed"] == "true"


def test_errors_are_replayed_too_but_not_auth_failures(api: APIClient) -> None:
    bad = post(api, {"email": ""}, key="k-bad")
    assert post(api, {"email": ""}, key="k-bad")["Idempotent-Replayed"] == "true"
    assert bad.status_code == 400

    anonymous = APIClient()
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer trk_wrong_secret")
    assert post(anonymous, {"email": "ana@example.com"}, key="k-anon").status_code == 401
    assert not IdempotencyRecord.objects.filter(key="k-anon").exists()


def test_requests_without_the_header_are_untouched(api: APIClient) -> None:
    api.post(URL, {"email": "ana@example.com"}, format="json")

    assert not IdempotencyRecord.objects.exists()


def test_an_overlong_key_is_a_400(api: APIClient) -> None:
    response = post(api, {"email": "ana@example.com"}, key="k" * 300)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]


def test_a_request_abandoned_in_flight_can_be_retried_after_the_lock_timeout(
    api: APIClient, workspace: Workspace
) -> None:
    body = json.dumps({"email": "ana@example.com"}).encode()
    IdempotencyRecord.objects.create(
        scope=f"workspace:{workspace.pk}",
        key="key-1",
        request_hash="whatever",
        created_at=timezone.now() - timedelta(minutes=10),
    )

    response = api.post(URL, body, content_type="application/json", headers={"Idempotency-Key": "key-1"})

    assert response.status_code == 201


def test_expired_records_are_purged() -> None:
    IdempotencyRecord.objects.create(
        scope="s", key="old", request_hash="h", created_at=timezone.now() - timedelta(days=2)
    )
    IdempotencyRecord.objects.create(scope="s", key="new", request_hash="h")

    assert purge_expired() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_while_the_first_is_in_flight_is_a_409(api_key: tuple[ApiKey, str]) -> None:
    def client() -> APIClient:
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
        return c

    results: dict[str, Any] = {}
    urls_idempotency.release.clear()
    urls_idempotency.entered.clear()

    def first() -> None:
        try:
            results["first"] = client().post("/api/v1/slow/", {}, format="json", headers={"Idempotency-Key": "same"})
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert urls_idempotency.entered.wait(timeout=10)
        duplicate = client().post("/api/v1/slow/", {}, format="json", headers={"Idempotency-Key": "same"})
    finally:
        urls_idempotency.release.set()
        thread.join(timeout=10)

    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "idempotency_conflict"
    assert results["first"].status_code == 201
    replay = client().post("/api/v1/slow/", {}, format="json", headers={"Idempotency-Key": "same"})
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"


def test_the_form_endpoint_honours_the_key_per_form(client: Client, workspace: Workspace) -> None:
    form = FormFactory(workspace=workspace)
    other_form = FormFactory(workspace=workspace)
    headers = {"Origin": "https://www.acme.example", "Idempotency-Key": "submit-1"}
    body = json.dumps({"email": "ana@example.com", "message": "hi"})

    first = client.post(f"/f/{form.key}/", body, content_type="application/json", headers=headers)
    replay = client.post(f"/f/{form.key}/", body, content_type="application/json", headers=headers)
    changed = client.post(
        f"/f/{form.key}/", json.dumps({"email": "bo@example.com"}), content_type="application/json", headers=headers
    )
    elsewhere = client.post(f"/f/{other_form.key}/", body, content_type="application/json", headers=headers)

    assert first.status_code == replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert replay["Access-Control-Allow-Origin"] == "https://www.acme.example"
    assert changed.status_code == 422
    assert elsewhere.status_code == 200 and "Idempotent-Replayed" not in elsewhere
    assert FormSubmission.objects.filter(form=form).count() == 1
    assert FormSubmission.objects.filter(form=other_form).count() == 1


def test_posts_to_unknown_form_keys_leave_no_records(client: Client) -> None:
    response = client.post("/f/made-up/", "{}", content_type="application/json", headers={"Idempotency-Key": "spam-1"})

    assert response.status_code == 404
    assert not IdempotencyRecord.objects.exists()
