from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.imports import DEFAULT_CHUNK_SIZE, ImportFailed, import_contacts
from crm.models import Workspace


class Command(BaseCommand):
    help = "Create or update a workspace's contacts from a CSV file with a header row (email, name, phone, …)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument("--dry-run", action="store_true", help="check the file and count, write nothing")
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
        parser.add_argument("--phone-region", default=None, help="region for numbers without +, e.g. MT")

    def handle(self, *args: Any, file: Path, workspace: str, dry_run: bool, **options: Any) -> None:
        try:
            ws = Workspace.objects.get(slug=workspace)
        except Workspace.DoesNotExist as exc:
            raise CommandError(f"No workspace with slug '{workspace}'.") from exc
        try:
            with file.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
                report = import_contacts(
                    workspace=ws,
                    stream=stream,
                    dry_run=dry_run,
                    chunk_size=options["chunk_size"],
                    phone_region=options["phone_region"],
                )
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        except ImportFailed as exc:
            raise CommandError(str(exc)) from exc
        for error in report.errors:
            self.stderr.write(str(error))
        if report.error_count > len(report.errors):
            self.stderr.write(f"… and {report.error_count - len(report.errors)} more rows with errors.")
        self.stdout.write(report.summary())
