from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from campaigns import services
from config import observability
from config.observability import JsonLineFormatter, PlainFormatter, bind
from tests.factories import CampaignFactory, ContactFactory, MessageFactory

pytestmark = pytest.mark.django_db


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(observability.ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Any:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_sane_request_id_from_the_proxy_is_kept_and_returned(client: Client, captured: list) -> None:
    response = client.get("/u/not-a-real-token-at-all/", HTTP_X_REQUEST_ID="lb-1234.abcd")

    assert response["X-Request-ID"] == "lb-1234.abcd"
    access = [r for r in captured if r.name == "trickle.request"]
    assert access and access[-1].request_id == "lb-1234.abcd"
    assert access[-1].status == 404


def test_the_access_line_never_contains_an_unsubscribe_token(client: Client, captured: list) -> None:
    client.get("/u/abcdefghijklmnopqrstuvwxyz012345/")

    [access] = [r for r in captured if r.name == "trickle.request"]
    assert access.path == "/u/<token>/"
    assert "abcdefghijklmnop" not in access.getMessage()


@pytest.mark.parametrize("header", ["", "a b", "x" * 129, "id\r\nX-Evil: 1", "é"])
def test_an_insane_request_id_is_replaced_by_a_fresh_one(client: Client, header: str) -> None:
    response = client.get("/u/not-a-real-token-at-all/", HTTP_X_REQUEST_ID=header)

    assert response["X-Request-ID"] != header
    assert observability.SANE_REQUEST_ID.match(response["X-Request-ID"])


def test_every_record_of_a_request_carries_its_request_id(client: Client, captured: list) -> None:
    client.get("/u/not-a-real-token-at-all/", HTTP_X_REQUEST_ID="req-42")
    client.get("/u/not-a-real-token-at-all/", HTTP_X_REQUEST_ID="req-43")

    ids = [getattr(r, "request_id", None) for r in captured if r.name == "trickle.request"]
    assert ids == ["req-42", "req-43"]
    assert observability.current() == {}


def test_the_json_format_is_one_object_per_line_with_the_context() -> None:
    record = logging.LogRecord("campaigns.services", logging.INFO, __file__, 1, "claimed %s", (3,), None)
    record.delivery_ids = [1, 2, 3]
    with bind(request_id="r-1", task_id="t-1"):
        observability.ContextFilter().filter(record)
    line = JsonLineFormatter().format(record)

    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "claimed 3"
    assert data["level"] == "INFO"
    assert data["logger"] == "campaigns.services"
    assert data["request_id"] == "r-1"
    assert data["task_id"] == "t-1"
    assert data["delivery_ids"] == [1, 2, 3]
    assert "time" in data


def test_the_plain_format_appends_the_context() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    with bind(request_id="r-2"):
        observability.ContextFilter().filter(record)
        line = PlainFormatter("%(message)s").format(record)

    assert line == "hello [request_id=r-2]"


def test_a_task_enqueued_during_a_request_carries_its_request_id_in_a_header() -> None:
    headers: dict[str, Any] = {}
    with bind(request_id="req-7"):
        observability._add_request_id_header(headers=headers)

    assert headers == {observability.TASK_HEADER: "req-7"}


def test_the_worker_binds_the_task_id_and_the_request_id_from_the_header_for_the_task_only() -> None:
    class Request:
        trickle_request_id = "req-8"

    class Task:
        name = "campaigns.tasks.send_deliveries"
        request = Request()

    observability._bind_task(task_id="task-1", task=Task())
    bound = observability.current()
    observability._unbind_task(task_id="task-1")

    assert bound == {"task_id": "task-1", "task": "campaigns.tasks.send_deliveries", "request_id": "req-8"}
    assert observability.current() == {}


def test_the_engine_logs_claim_and_ses_outcome_with_delivery_and_campaign_ids(
    captured: list, workspace: Any, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    campaign = CampaignFactory(workspace=workspace)
    message = MessageFactory(campaign=campaign)
    contact = ContactFactory(workspace=workspace)
    delivery = services.send_test(message=message, to_email="ops@example.com", sample=contact)
    with bind(request_id="req-9"):
        services.send_deliveries(delivery_ids=[delivery.pk])

    engine = [r for r in captured if r.name == "campaigns.services"]
    claimed = next(r for r in engine if r.getMessage().startswith("claimed 1"))
    answered = next(r for r in engine if r.getMessage().startswith("ses answered"))
    assert claimed.delivery_ids == [delivery.pk]
    assert claimed.campaign_id == campaign.pk
    assert claimed.request_id == "req-9"
    assert answered.outcomes == {delivery.pk: "sent"}
    assert answered.campaign_id == campaign.pk
