"""Thin Celery tasks for the customer record: ids in, a service call, nothing else."""

from __future__ import annotations

import logging

from celery import shared_task

from crm.models import StripeEvent

logger = logging.getLogger(__name__)


@shared_task
def process_stripe_event(event_pk: int) -> None:
    """Apply one stored Stripe event. A failure is kept on the row (`outcome`, processed_at empty)
    for the operator to see and retry from the admin; Stripe already got its 200."""
    from crm.webhooks import process_event

    event = StripeEvent.objects.filter(pk=event_pk).first()
    if event is None:
        return
    try:
        process_event(event=event)
    except Exception as exc:
        logger.exception("Stripe event %s (%s) failed", event.event_id, event.type)
        StripeEvent.objects.filter(pk=event_pk, processed_at__isnull=True).update(outcome=f"failed: {exc}"[:2000])
