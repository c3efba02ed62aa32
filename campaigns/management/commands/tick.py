from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns.services import run_tick


class Command(BaseCommand):
    help = "Run one engine tick now, or as if at --at. --dry-run previews without changing anything."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--at", help="ISO-8601 moment, e.g. 2026-03-29T10:05:00+02:00 (naive = UTC)")
        parser.add_argument("--dry-run", action="store_true", help="compute and print; write and send nothing")

    def handle(self, *args: Any, at: str | None, dry_run: bool, **options: Any) -> None:
        moment = self._parse(at) if at else timezone.now()
        reports = run_tick(at=moment, dry_run=dry_run)
        mode = " (dry run: nothing was changed)" if dry_run else ""
        self.stdout.write(f"tick at {moment.isoformat()}{mode}")
        if not reports:
            self.stdout.write("no campaign due")
        for r in reports:
            state = "" if r.active else " [inactive]"
            self.stdout.write(
                f"campaign {r.campaign_id} '{r.campaign}'{state} {r.local_date}: "
                f"enrolled={r.enrolled} due={r.due} queued={r.queued} skipped={r.skipped}"
            )

    @staticmethod
    def _parse(value: str) -> datetime:
        moment = parse_datetime(value)
        if moment is None:
            raise CommandError(f"--at: '{value}' is not an ISO-8601 date-time")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment
