from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from config import health

pytestmark = pytest.mark.django_db


def test_it_answers_ok_when_the_database_and_redis_answer(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
    assert response["Cache-Control"] == "no-store"


def test_it_needs_no_auth_and_accepts_any_host_header(client: Client) -> None:
    # Orchestrators probe the node's IP, which is not in ALLOWED_HOSTS.
    response = client.get("/healthz/", HTTP_HOST="10.1.2.3:8000")

    assert response.status_code == 200


def test_it_answers_503_naming_redis_when_redis_is_down(client: Client, settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["failed"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")
    assert "127.0.0.1" not in response.content.decode()


def test_it_answers_503_naming_the_database_when_it_fails(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise OperationalError("could not connect to server at db.internal:5432")

    monkeypatch.setitem(health.CHECKS, "database", down)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["database"]
    assert "db.internal" not in response.content.decode()


def test_it_refuses_methods_other_than_get(client: Client) -> None:
    response = client.post("/healthz")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_other_paths_are_not_answered_by_the_probe(client: Client) -> None:
    assert client.get("/healthzz").status_code == 404
