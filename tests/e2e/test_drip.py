"""End to end: API → campaign → beat → tick → worker → SES (moto over HTTP), with time moved.

Nothing of ours is mocked: contacts and the campaign are created over HTTP against a live server,
a real Celery worker and beat run as separate processes against Redis and the test database, and
SES is moto's server, which keeps each Raw email whole, headers included.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.models import Delivery
from contacts.models import Contact
from crm.models import ApiKey, Workspace
from tests.e2e.processes import beat_args, manage, process_env, running, wait_for, worker_args

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MESSAGES = [
    (0, "Welcome, {{#if name}}{{name}}{{else}}friend{{/if}}", "<p>Hi {{#if name}}{{name}}{{else}}there{{/if}}!</p>"),
    (2, "Two days in", "<p>Day two for {{email}}.</p>"),
    (5, "Five days in", '<p>Day five. <a href="{{unsubscribe_url}}">Leave</a></p>'),
]


def api(live_server: Any, secret: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    session.base_url = live_server.url  # type: ignore[attr-defined]
    return session


def post(session: requests.Session, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = session.post(f"{session.base_url}{path}", json=body, timeout=30)  # type: ignore[attr-defined]
    assert response.status_code in (200, 201), response.text
    return response.json()


def html_of(email: EmailMessage) -> str:
    return next(p for p in email.walk() if p.get_content_type() == "text/html").get_content()


def test_a_three_message_drip_arrives_exactly_once_per_recipient(
    live_server: Any, workspace: Workspace, moto_ses: Any, settings: Any, tmp_path: Path
) -> None:
    settings.SITE_URL = live_server.url
    settings.SES_MAX_SEND_RATE = 50
    moto_ses.verify("acme.test")
    _, secret = ApiKey.issue(workspace=workspace, name="e2e")
    client = api(live_server, secret)
    for email, name, language in [
        ("Ana@Example.com", "Ana", "en"),
        ("ben@example.com", "", "en"),
        ("chloe@example.com", "Chloé", "fr"),
    ]:
        post(client, "/api/v1/contacts/", {"email": email, "name": name, "attributes": {"language": language}})
    post(
        client,
        "/api/v1/campaigns/",
        {
            "name": "Welcome",
            "contact_filter": "language=en",
            "active": True,
            "send_time": "00:00",
            "time_zone": "UTC",
            "messages": [{"send_day": d, "subject": s, "html_body": h} for d, s, h in MESSAGES],
        },
    )
    # The schedule the data migration creates, due now (beat would otherwise wait a full minute).
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.update_or_create(
        name="trickle: tick every minute",
        defaults={
            "task": "campaigns.tasks.tick",
            "interval": every_minute,
            "last_run_at": timezone.now() - timedelta(minutes=5),
        },
    )
    env = process_env()
    logs = [tmp_path / "worker.log", tmp_path / "beat.log"]
    today = timezone.now().date()

    def settled(expected: int) -> bool:
        rows = Delivery.objects.filter(is_test=False)
        return rows.count() == expected and not rows.filter(status__in=["queued", "sending"]).exists()

    with (
        running(worker_args("e2e"), env=env, log=logs[0]),
        running(beat_args(tmp_path / "beat-schedule"), env=env, log=logs[1]),
    ):
        # Beat's tick enrolls ana and ben (not chloé: French) and a worker sends day 0.
        wait_for(lambda: settled(2), timeout=90, what="day 0 sent by beat + worker", logs=logs)
        for offset in range(1, 7):
            if offset == 2:
                # A signup after the campaign started: enrolled on day 2, so its day 0 is then.
                post(
                    client,
                    "/api/v1/contacts/",
                    {"email": "dora@example.com", "name": "Dora", "attributes": {"language": "en"}},
                )
            moment = datetime.combine(today + timedelta(days=offset), datetime.min.time(), tzinfo=UTC) + timedelta(
                minutes=1
            )
            manage("tick", "--at", moment.isoformat(), env=env)
            # Running the same tick again, as a second beat would, changes nothing.
            manage("tick", "--at", moment.isoformat(), env=env)
        wait_for(lambda: settled(8), timeout=90, what="all eight deliveries settled", logs=logs)

    received: dict[str, list[EmailMessage]] = defaultdict(list)
    for email in moto_ses.emails():
        received[str(email["To"]).lower()].append(email)
    assert sorted(received) == ["ana@example.com", "ben@example.com", "dora@example.com"]
    assert [e["Subject"] for e in received["ana@example.com"]] == ["Welcome, Ana", "Two days in", "Five days in"]
    assert [e["Subject"] for e in received["ben@example.com"]] == ["Welcome, friend", "Two days in", "Five days in"]
    assert [e["Subject"] for e in received["dora@example.com"]] == ["Welcome, Dora", "Two days in"]
    assert "Hi there!" in html_of(received["ben@example.com"][0])
    assert "Day two for ben@example.com." in html_of(received["ben@example.com"][1])

    for address, emails in received.items():
        contact = Contact.objects.get(email_key=address)
        link = f"{live_server.url}/u/{contact.unsubscribe_token}/"
        for email in emails:
            assert email["List-Unsubscribe"].strip() == f"<{link}>"
            assert email["List-Unsubscribe-Post"].strip() == "List-Unsubscribe=One-Click"
            assert email["List-Id"].strip().endswith(f".acme.{settings.LIST_ID_DOMAIN}>")
            assert f'href="{link}"' in html_of(email)

    sent = Delivery.objects.filter(is_test=False)
    assert sent.count() == 8 and set(sent.values_list("status", flat=True)) == {"sent"}
    assert len(set(sent.values_list("provider_message_id", flat=True))) == 8
    days = {(d.to_email.lower(), d.message.send_day): d.scheduled_on for d in sent.select_related("message")}
    assert days[("dora@example.com", 0)] == today + timedelta(days=2)
    assert days[("dora@example.com", 2)] == today + timedelta(days=4)
    assert days[("ana@example.com", 5)] == today + timedelta(days=5)
    assert isinstance(days[("ana@example.com", 0)], date)
