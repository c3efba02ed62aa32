from __future__ import annotations

import pytest
from celery import signals
from django.db import OperationalError, connection, connections

from campaigns import tasks
from contacts.models import Contact

pytestmark = pytest.mark.django_db(transaction=True)


def terminate_own_backend() -> None:
    """What a failover or `pg_terminate_backend` does to a worker's persistent connection."""
    pid = connection.connection.info.backend_pid
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


def run_task_hooks() -> None:
    signals.task_postrun.send(sender=tasks.tick, task=tasks.tick, task_id="t1")
    signals.task_prerun.send(sender=tasks.tick, task=tasks.tick, task_id="t2")


def test_a_worker_reconnects_after_its_database_backend_was_terminated() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("terminating a server backend is a PostgreSQL fault; SQLite has no connection to lose")
    Contact.objects.count()  # opens the persistent connection a worker keeps between tasks
    terminate_own_backend()
    with pytest.raises(OperationalError):
        Contact.objects.count()  # the task that was running when the backend went away fails

    run_task_hooks()

    assert Contact.objects.count() == 0  # and the next task gets a new connection


def test_it_keeps_a_healthy_connection_between_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)  # production's persistent connections
    connection.close()
    Contact.objects.count()
    before = connection.connection

    run_task_hooks()
    Contact.objects.count()

    assert connection.connection is before
