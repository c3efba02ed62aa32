from __future__ import annotations

from celery import shared_task

from campaigns import services


@shared_task(ignore_result=True)
def tick() -> None:
    """Run every minute by beat (see the data migration that creates the schedule)."""
    services.run_tick()


@shared_task(ignore_result=True, acks_late=True)
def send_deliveries(delivery_ids: list[int]) -> None:
    # Safe to run twice for the same ids (a redelivered task): the claim lets only one through.
    # A broken database connection is replaced before every task (config/celery.py).
    services.send_deliveries(delivery_ids=delivery_ids)
