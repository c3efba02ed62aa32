"""`manage.py celery_ping [--timeout S]`: a liveness probe for Celery workers.

Exit 0 and print the workers that answered `ping` within the timeout; exit 1 when none did or the
broker cannot be reached. Workers of this install only (CELERY_CONTROL_EXCHANGE).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Exit 0 if at least one Celery worker answers a ping (printing which), else exit 1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for answers (default 2)")
        parser.add_argument(
            "--destination", action="append", help="only ask this worker (e.g. worker1@host); repeatable"
        )

    def handle(self, *args: Any, timeout: float, destination: list[str] | None, **options: Any) -> None:
        from config.celery import app

        if timeout <= 0:
            raise CommandError("--timeout must be positive.")
        try:
            with app.connection_for_write() as connection:
                # Fail fast when the broker is down instead of retrying forever.
                connection.ensure_connection(max_retries=1, timeout=timeout)
                replies = app.control.ping(destination=destination, timeout=timeout, connection=connection)
        except Exception as exc:
            raise CommandError(f"broker unreachable: {type(exc).__name__}: {exc}", returncode=1) from exc
        answered = sorted(name for reply in replies for name in reply)
        if not answered:
            raise CommandError(f"no Celery worker answered within {timeout:g}s", returncode=1)
        for name in answered:
            self.stdout.write(f"{name}: pong")
