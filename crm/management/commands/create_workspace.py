from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.models import Workspace, validate_time_zone


class Command(BaseCommand):
    help = "Create a workspace (or report the existing one with that slug)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--time-zone", default="UTC")
        parser.add_argument("--from-email", default="")

    def handle(self, *args: Any, slug: str, name: str, time_zone: str, from_email: str, **options: Any) -> None:
        try:
            validate_time_zone(time_zone)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from exc
        workspace, created = Workspace.objects.get_or_create(
            slug=slug, defaults={"name": name, "time_zone": time_zone, "default_from_email": from_email}
        )
        verb = "Created" if created else "Exists:"
        self.stdout.write(f"{verb} workspace {workspace.slug} ({workspace.name}, {workspace.time_zone})")
