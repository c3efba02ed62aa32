from __future__ import annotations

import secrets
from datetime import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from campaigns.models import Campaign, Message
from contacts.models import Contact
from crm.models import ApiKey, Membership, Workspace

WELCOME = [
    (0, "Welcome to Demo Studio, {{#if name}}{{name}}{{else}}friend{{/if}}!",
     "<p>Hi {{#if first_name}}{{first_name}}{{else}}there{{/if}},</p><p>Thanks for signing up. "
     "Over the next few days we'll send you two short tips.</p>"),
    (2, "Tip 1: make the most of {{#if company}}{{company}}{{else}}your account{{/if}}",
     "<p>Hi {{#if first_name}}{{first_name}}{{else}}there{{/if}},</p><p>Here is the first tip.</p>"
     '<p>You can <a href="{{unsubscribe_url}}">unsubscribe</a> at any time.</p>'),
    (5, "Tip 2: we're here to help",
     "<p>Hi {{#if first_name}}{{first_name}}{{else}}there{{/if}},</p><p>Reply to this email any time.</p>"),
]  # fmt: skip
CONTACTS = [
    ("ana@example.com", "Ana Borg", "Borg & Co", {"language": "en", "plan": "pro"}),
    ("ben@example.com", "Ben Camilleri", "", {"language": "en"}),
    ("chloe@example.com", "", "", {"language": "en"}),
    ("dario@example.com", "Dario Rossi", "Rossi Srl", {"language": "it"}),
    ("elise@example.com", "Élise Martin", "", {"language": "fr"}),
]


class Command(BaseCommand):
    help = "Create (once) the demo workspace: an admin login, an API key, contacts and a 3-message drip."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        workspace, created = Workspace.objects.get_or_create(
            slug="demo",
            defaults={
                "name": "Demo Studio",
                "time_zone": "UTC",
                "default_from_name": "Demo Studio",
                "default_from_email": "hello@demo.trickle.localhost",
            },
        )
        if not created:
            self.stdout.write("Demo workspace exists (admin login and API key were printed when it was created).")
            self._where()
            return
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(
            username="admin", defaults={"email": "admin@trickle.localhost"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        Membership.objects.get_or_create(user=user, workspace=workspace)
        _, secret = ApiKey.issue(workspace=workspace, name="demo")
        for email, name, company, attributes in CONTACTS:
            Contact.objects.create(
                workspace=workspace, email=email, name=name, company=company, attributes=attributes, source="admin"
            )
        # 00:00 local: the first beat tick after `make run` finds today's slot already passed and
        # sends day 0 to every English-speaking contact within a minute.
        campaign = Campaign.objects.create(
            workspace=workspace, name="Welcome drip", contact_filter="language=en", active=True, send_time=time(0, 0)
        )
        for day, subject, html in WELCOME:
            Message.objects.create(campaign=campaign, send_day=day, subject=subject, html_body=html)
        self.stdout.write(self.style.SUCCESS("Created the demo workspace. These are shown once:"))
        self.stdout.write(f"  admin login:  admin / {password}")
        self.stdout.write(f"  API key:      {secret}")
        self._where()

    def _where(self) -> None:
        self.stdout.write(f"  admin:        {settings.SITE_URL}/admin/")
        self.stdout.write(f"  API docs:     {settings.SITE_URL}/api/v1/docs/")
        if settings.SES_ENDPOINT_URL:
            self.stdout.write(f"  sent mail:    {settings.SES_ENDPOINT_URL}/_ses/  (local SES endpoint)")
