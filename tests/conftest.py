from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from crm.models import ApiKey, Workspace
from tests.celery_queue import celery_queue  # noqa: F401  (fixture)
from tests.factories import WorkspaceFactory
from tests.ses import *  # noqa: F403  (the local_ses and moto_ses fixtures)


def pytest_configure(config: pytest.Config) -> None:
    from django.conf import settings

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    # Each test process gets its own Redis namespace and queue, so parallel runs never share state.
    run_id = f"test-{worker}-{uuid.uuid4().hex[:8]}"
    settings.REDIS_PREFIX = run_id
    settings.CACHES["default"]["KEY_PREFIX"] = run_id
    settings.CELERY_TASK_DEFAULT_QUEUE = run_id
    settings.CELERY_CONTROL_EXCHANGE = run_id
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.SITE_URL = "http://testserver"


@pytest.fixture(autouse=True)
def _eager_celery() -> Iterator[None]:
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    # Only this run's keys: cache.clear() would FLUSHDB and wipe parallel runs' queues and buckets.
    import redis
    from django.conf import settings

    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"*{settings.REDIS_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def workspace(db: Any) -> Workspace:
    return WorkspaceFactory(slug="acme", name="Acme")


@pytest.fixture
def other_workspace(db: Any) -> Workspace:
    return WorkspaceFactory(slug="globex", name="Globex")


@pytest.fixture
def api_key(workspace: Workspace) -> tuple[ApiKey, str]:
    return ApiKey.issue(workspace=workspace, name="tests")


@pytest.fixture
def api(api_key: tuple[ApiKey, str]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    return client


@pytest.fixture
def other_api(other_workspace: Workspace) -> APIClient:
    _, secret = ApiKey.issue(workspace=other_workspace, name="other")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client
