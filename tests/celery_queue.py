"""Read what was published to the test run's Celery queue in Redis, without running a worker.

Unit tests of the tick use this to see exactly which delivery ids were handed to workers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings


class CeleryQueue:
    def __init__(self) -> None:
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.name = settings.CELERY_TASK_DEFAULT_QUEUE

    def drain(self) -> list[list[int]]:
        """The first argument (delivery ids) of every send task published, oldest first."""
        out = []
        while raw := self.redis.rpop(self.name):
            message = json.loads(raw)
            body = json.loads(base64.b64decode(message["body"]))
            args = body[0]
            out.append(args[0])
        return out


@pytest.fixture
def celery_queue() -> Iterator[CeleryQueue]:
    from config.celery import app

    app.conf.task_always_eager = False
    queue = CeleryQueue()
    queue.redis.delete(queue.name)
    yield queue
    queue.redis.delete(queue.name)
    app.conf.task_always_eager = True
