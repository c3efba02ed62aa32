import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections

from config import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("trickle")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Request id into task headers, task id into every log line, Django's LOGGING in the worker and beat.
observability.connect_celery()


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(task: Any = None, **kwargs: Any) -> None:
    """Around every task, do what Django does around every request: drop a connection that
    raised a database error or outlived CONN_MAX_AGE, and re-arm the health check.

    CELERY_DB_REUSE_MAX stops Celery from closing the connection around every task, and with it
    the only thing that noticed a dead one: a worker whose backend was terminated (a failover, a
    PgBouncer restart) then failed every later task with "the connection is closed".
    """
    if task is not None and task.request.is_eager:
        return  # eager tasks run inside the caller's connection and transaction
    close_old_connections()
