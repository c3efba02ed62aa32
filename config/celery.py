import os

from celery import Celery

from config import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("trickle")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Request id into task headers, task id into every log line, Django's LOGGING in the worker and beat.
observability.connect_celery()
