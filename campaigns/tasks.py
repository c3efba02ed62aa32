from __future__ import annotations

from celery import Task, shared_task
from django.db import close_old_connections

from campaigns import services


@shared_task(ignore_result=True)
def tick() -> None:
    """Run every minute by beat (see the data migration that creates the schedule)."""
    services.run_tick()


@shared_task(bind=True, ignore_result=True, acks_late=True)
def send_deliveries(self: Task, delivery_ids: list[int]) -> None:
    # Safe to run twice for the same ids (a redelivered task): the claim lets only one through.
    # The connection is reused across tasks (CELERY_DB_REUSE_MAX); this applies CONN_MAX_AGE and
    # the health check that Django would apply at the start of a request.
    if not self.request.is_eager:
        close_old_connections()
    services.send_deliveries(delivery_ids=delivery_ids)
