"""The OpenAPI schema drives the whole API (contacts, campaigns, stats, batch): generated requests
never cause a 5xx, and every response (status, content type, headers, body) matches what the
schema documents.

Random ids would almost always be 404s, so a third of the cases that name an object are pointed at
one that exists in the key's workspace, and a third at one in another workspace (which must be a
404 too). This reaches what stateful links would (reads, updates and deletes of real objects)
without them: drf-spectacular emits none. Bounded and derandomized so CI runs it in under a minute.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

from config.wsgi import application
from crm.models import ApiKey, Workspace
from tests.factories import CampaignFactory, ContactFactory, MessageFactory

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


# Loaded when the module is collected (schemathesis' lazy fixture loader does not support pytest 9);
# serving the schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    # Calling the WSGI app directly fires the request signals that close "old" database connections,
    # which would close the test's transaction; Django's test client disconnects them the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@dataclass
class Seed:
    secret: str
    # {path prefix: (an object of the key's workspace, one of another workspace)}
    ids: dict[str, tuple[Any, Any]]


@pytest.fixture
def seeded(workspace: Workspace, other_workspace: Workspace) -> Seed:
    """Contacts and campaigns for reads, updates and deletes to find, including another workspace's."""
    ana = ContactFactory(workspace=workspace, email="ana@example.com", phone="+35699123456", attributes={"plan": "pro"})
    ContactFactory.create_batch(3, workspace=workspace)
    secret_contact = ContactFactory(workspace=other_workspace, email="secret@example.com")
    campaign = CampaignFactory(workspace=workspace, contact_filter="plan=pro")
    MessageFactory(campaign=campaign, send_day=0)
    MessageFactory(campaign=campaign, send_day=3)
    other_campaign = CampaignFactory(workspace=other_workspace)
    MessageFactory(campaign=other_campaign, send_day=0)
    return Seed(
        secret=ApiKey.issue(workspace=workspace, name="schemathesis")[1],
        ids={
            "/api/v1/contacts/": (ana.pk if ana.pk % 2 else ana.email, secret_contact.email),
            "/api/v1/campaigns/": (campaign.pk, other_campaign.pk),
        },
    )


def point_at_seeded_objects(case: Any, seed: Seed) -> bool | None:
    """Replace a generated `{id}` by a seeded object's for two thirds of the cases (deterministically).
    Returns True when it is another workspace's object, which must not be found."""
    if not case.path_parameters or "id" not in case.path_parameters:
        return None
    path = case.operation.path
    for prefix, (own, foreign) in seed.ids.items():
        if path.startswith(prefix + "{id}"):
            pick = zlib.crc32(repr(case.path_parameters["id"]).encode()) % 3
            if pick == 1:
                case.path_parameters["id"] = own
                return False
            if pick == 2:
                case.path_parameters["id"] = foreign
                return True
    return None


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_matches_its_schema_and_never_errors(case: Any, seeded: Seed) -> None:
    foreign = point_at_seeded_objects(case, seeded)

    response = case.call_and_validate(headers={"Authorization": f"Bearer {seeded.secret}"}, checks=CHECKS)

    if foreign and case.method == case.operation.method.upper() and response.request.headers.get("Authorization"):
        # Another workspace's object is never shown, changed or deleted: it does not exist here.
        # (Cases generated to test a missing Authorization header get their 401 instead.)
        assert response.status_code in (400, 404), (case.method, case.path, response.status_code)
