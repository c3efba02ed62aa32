from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from contacts.models import Contact
from crm.exports import FilterInvalid, filter_contacts, write_csv
from crm.models import Workspace


class Command(BaseCommand):
    help = "Write a workspace's contacts, optionally filtered, as CSV (to stdout or --output)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument("--output", type=Path, help="file to write; default stdout")
        parser.add_argument("--email")
        parser.add_argument("--status", choices=Contact.Status.values)
        parser.add_argument("--source", help="e.g. import, api, or a form's slug such as pricing_wizard")
        parser.add_argument("--search", help="text in the email, name or company, or phone digits")
        parser.add_argument(
            "--attr", action="append", default=[], metavar="KEY=VALUE", help="attribute filter; repeatable"
        )

    def handle(self, *args: Any, workspace: str, output: Path | None, attr: list[str], **options: Any) -> None:
        try:
            ws = Workspace.objects.get(slug=workspace)
        except Workspace.DoesNotExist as exc:
            raise CommandError(f"No workspace with slug '{workspace}'.") from exc
        params = {name: options[name] for name in ("email", "status", "source", "search") if options[name]}
        for pair in attr:
            key, sep, value = pair.partition("=")
            if not sep:
                raise CommandError(f"--attr takes KEY=VALUE, not '{pair}'.")
            params[f"attributes.{key}"] = value
        try:
            contacts = filter_contacts(Contact.objects.filter(workspace=ws), params)
        except FilterInvalid as exc:
            raise CommandError(str(exc)) from exc
        if output is None:
            # Rows end in \r\n, so the wrapper adds no newline of its own.
            count = write_csv(contacts, self.stdout)  # type: ignore[arg-type]
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = write_csv(contacts, out)
        self.stderr.write(f"Exported {count} contacts.")
