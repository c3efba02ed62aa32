from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.models import ApiKey, Workspace


class Command(BaseCommand):
    help = "Issue an API key for a workspace and print its secret (shown this once only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument("--name", default="default")

    def handle(self, *args: Any, workspace: str, name: str, **options: Any) -> None:
        try:
            ws = Workspace.objects.get(slug=workspace)
        except Workspace.DoesNotExist as exc:
            raise CommandError(f"No workspace with slug '{workspace}'.") from exc
        _, secret = ApiKey.issue(workspace=ws, name=name)
        self.stdout.write(secret)
