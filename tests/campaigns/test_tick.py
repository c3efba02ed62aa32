"""The tick: when a campaign runs, who it enrolls, which message each contact gets on which day."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection

from campaigns.models import Campaign, Delivery, Enrollment
from campaigns.services import enroll, run_campaign, run_tick, schedule
from contacts.models import Contact
from crm.models import Workspace
from tests.celery_queue import CeleryQueue
from tests.factories import CampaignFactory, ContactFactory, EnrollmentFactory, MessageFactory

pytestmark = pytest.mark.django_db

MALTA = ZoneInfo("Europe/Malta")


def at(text: str, zone: ZoneInfo = MALTA) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.fixture(autouse=True)
def _queue_only(celery_queue: CeleryQueue) -> None:
    """The tick's contract ends at handing deliveries to workers: nothing is sent here."""


@pytest.fixture
def campaign(workspace: Workspace) -> Campaign:
    campaign = CampaignFactory(workspace=workspace, time_zone="Europe/Malta", send_time=time(10, 0))
    for day in (0, 2, 5):
        MessageFactory(campaign=campaign, send_day=day)
    return campaign


def messages_by_contact(campaign: Campaign) -> dict[str, list[tuple[date, int]]]:
    out: dict[str, list[tuple[date, int]]] = {}
    for d in Delivery.objects.filter(campaign=campaign).select_related("message", "contact").order_by("scheduled_on"):
        out.setdefault(d.contact.email, []).append((d.scheduled_on, d.message.send_day))
    return out


def test_a_campaign_is_due_only_once_its_local_send_time_has_come(campaign: Campaign) -> None:
    assert not campaign.is_due(at("2026-06-01T09:59"))
    assert campaign.is_due(at("2026-06-01T10:00"))
    # 10:00 in Malta is 08:00 UTC in summer.
    assert campaign.is_due(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    assert not campaign.is_due(datetime(2026, 6, 1, 7, 59, tzinfo=UTC))


def test_it_falls_back_to_the_workspace_time_zone(workspace: Workspace) -> None:
    workspace.time_zone = "America/New_York"
    workspace.save()
    campaign = CampaignFactory(workspace=workspace, time_zone="", send_time=time(9, 0))

    assert campaign.slot(date(2026, 1, 15)) == datetime(2026, 1, 15, 14, 0, tzinfo=UTC)
    assert campaign.slot(date(2026, 7, 15)) == datetime(2026, 7, 15, 13, 0, tzinfo=UTC)


def test_a_send_time_inside_the_spring_forward_gap_moves_after_the_gap(workspace: Workspace) -> None:
    # Europe/Malta skips 02:00-03:00 on 2026-03-29.
    campaign = CampaignFactory(workspace=workspace, time_zone="Europe/Malta", send_time=time(2, 30))

    slot = campaign.slot(date(2026, 3, 29))

    assert slot.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert slot.astimezone(MALTA).hour == 3


def test_it_enrolls_matching_subscribed_contacts_once(campaign: Campaign, workspace: Workspace) -> None:
    ana = ContactFactory(workspace=workspace, attributes={"language": "en"})
    ContactFactory(workspace=workspace, attributes={"language": "fr"})
    ContactFactory(workspace=workspace, attributes={"language": "en"}, status=Contact.Status.UNSUBSCRIBED)
    ContactFactory(attributes={"language": "en"})  # another workspace

    assert enroll(campaign, at=at("2026-06-01T10:00")) == 1
    assert enroll(campaign, at=at("2026-06-02T10:00")) == 0

    enrollment = Enrollment.objects.get(campaign=campaign)
    assert enrollment.contact == ana
    assert enrollment.enrolled_on == date(2026, 6, 1)


def test_the_enrollment_day_is_the_campaigns_local_date(workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace, time_zone="Pacific/Auckland", send_time=time(8, 0))
    ContactFactory(workspace=workspace)

    # 20:00 UTC on 1 June is 08:00 on 2 June in Auckland.
    enroll(campaign, at=datetime(2026, 6, 1, 20, 0, tzinfo=UTC))

    assert Enrollment.objects.get().enrolled_on == date(2026, 6, 2)


def test_each_message_is_due_on_its_send_day(campaign: Campaign, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com")
    start = date(2026, 6, 1)

    for offset in range(8):
        run_campaign(campaign, at=at(f"{start + timedelta(days=offset)}T10:00"))

    assert messages_by_contact(campaign)["ana@example.com"] == [
        (date(2026, 6, 1), 0),
        (date(2026, 6, 3), 2),
        (date(2026, 6, 6), 5),
    ]


def test_due_dates_count_local_days_across_a_dst_change(workspace: Workspace) -> None:
    # Clocks go back in Malta on 2026-10-25: that day has 25 hours, and day 1 is still the 26th.
    campaign = CampaignFactory(workspace=workspace, time_zone="Europe/Malta", send_time=time(10, 0))
    MessageFactory(campaign=campaign, send_day=0)
    MessageFactory(campaign=campaign, send_day=1)
    ContactFactory(workspace=workspace, email="ana@example.com")

    run_campaign(campaign, at=at("2026-10-25T10:00"))
    campaign.refresh_from_db()
    assert not campaign.is_due(at("2026-10-26T09:59"))
    assert campaign.is_due(at("2026-10-26T10:00"))
    run_campaign(campaign, at=at("2026-10-26T10:00"))

    assert messages_by_contact(campaign)["ana@example.com"] == [(date(2026, 10, 25), 0), (date(2026, 10, 26), 1)]


def test_a_missed_message_is_sent_at_the_next_slot_one_per_day(campaign: Campaign, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com")
    run_campaign(campaign, at=at("2026-06-01T10:00"))

    # Beat was down (or the campaign paused) from 2 to 8 June: day 2 and day 5 are both overdue.
    run_campaign(campaign, at=at("2026-06-09T10:00"))
    run_campaign(campaign, at=at("2026-06-10T10:00"))
    run_campaign(campaign, at=at("2026-06-11T10:00"))

    assert messages_by_contact(campaign)["ana@example.com"] == [
        (date(2026, 6, 1), 0),
        (date(2026, 6, 9), 2),
        (date(2026, 6, 10), 5),
    ]


def test_a_late_tick_the_same_day_does_the_10_oclock_work(campaign: Campaign, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace)

    with time_machine.travel(at("2026-06-01T16:45"), tick=False):
        reports = run_tick(at=at("2026-06-01T16:45"), dry_run=True)

    assert [(r.campaign_id, r.enrolled, r.due) for r in reports] == [(campaign.pk, 1, 1)]


def test_it_does_the_days_work_once_however_many_ticks_run(campaign: Campaign, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace)

    first = run_campaign(campaign, at=at("2026-06-01T10:00"))
    second = run_campaign(campaign, at=at("2026-06-01T10:01"))

    assert first is not None and first.enrolled == 1 and first.due == 1
    assert second is None
    assert Delivery.objects.count() == 1


def test_scheduling_twice_the_same_day_creates_nothing_new(campaign: Campaign, workspace: Workspace) -> None:
    EnrollmentFactory(campaign=campaign, contact=ContactFactory(workspace=workspace), enrolled_on=date(2026, 6, 1))

    assert schedule(campaign, on=date(2026, 6, 1)) == 1
    assert schedule(campaign, on=date(2026, 6, 1)) == 0


def test_an_unsubscribed_contact_gets_no_new_deliveries(campaign: Campaign, workspace: Workspace) -> None:
    ana = ContactFactory(workspace=workspace)
    run_campaign(campaign, at=at("2026-06-01T10:00"))
    ana.status = Contact.Status.UNSUBSCRIBED
    ana.save()

    run_campaign(campaign, at=at("2026-06-03T10:00"))

    assert Delivery.objects.filter(contact=ana).count() == 1


def test_dry_run_changes_nothing_and_previews_inactive_campaigns(campaign: Campaign, workspace: Workspace) -> None:
    Campaign.objects.filter(pk=campaign.pk).update(active=False)
    ContactFactory.create_batch(3, workspace=workspace)

    reports = run_tick(at=at("2026-06-01T10:00"), dry_run=True)

    assert [(r.enrolled, r.due, r.active) for r in reports] == [(3, 3, False)]
    assert Enrollment.objects.count() == 0
    assert Delivery.objects.count() == 0
    assert Campaign.objects.get(pk=campaign.pk).last_run_on is None


@pytest.mark.django_db(transaction=True)
def test_two_overlapping_ticks_never_enroll_or_queue_twice(workspace: Workspace, celery_queue: CeleryQueue) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the row-lock race needs a server database")
    campaign = CampaignFactory(workspace=workspace, time_zone="UTC", send_time=time(10, 0))
    MessageFactory(campaign=campaign, send_day=0)
    ContactFactory.create_batch(300, workspace=workspace)
    moment = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    barrier = threading.Barrier(4)
    results = []

    def tick() -> None:
        from django.db import connection as thread_connection

        barrier.wait()
        try:
            results.append(run_campaign(Campaign.objects.get(pk=campaign.pk), at=moment, dry_run=False))
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert Enrollment.objects.filter(campaign=campaign).count() == 300
    assert Delivery.objects.filter(campaign=campaign).count() == 300
    assert len([r for r in results if r is not None]) == 1
    published = celery_queue.drain()
    assert sorted(i for ids in published for i in ids) == sorted(Delivery.objects.values_list("id", flat=True))


def test_archived_contacts_are_never_enrolled(campaign: Campaign, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="active@example.com")
    ContactFactory(workspace=workspace, email="done@example.com").archive()

    enroll(campaign, at=at("2026-06-01T10:00"))

    assert list(Enrollment.objects.values_list("contact__email", flat=True)) == ["active@example.com"]


def test_one_broken_campaign_does_not_stop_the_others(workspace: Workspace) -> None:
    broken = CampaignFactory(workspace=workspace, send_time=time(9, 0), time_zone="UTC")
    MessageFactory(campaign=broken)
    healthy = CampaignFactory(workspace=workspace, send_time=time(9, 0), time_zone="UTC")
    MessageFactory(campaign=healthy)
    ContactFactory(workspace=workspace)
    # A filter that was valid when saved but no longer compiles (e.g. written by an older version).
    Campaign.objects.filter(pk=broken.pk).update(contact_filter="language = = en")

    reports = run_tick(at=datetime(2026, 6, 1, 9, 30, tzinfo=UTC))

    assert [r.campaign_id for r in reports] == [healthy.pk]
    assert Campaign.objects.get(pk=broken.pk).last_run_on is None


def test_a_suppressed_enrollment_gets_no_new_deliveries(campaign: Campaign, workspace: Workspace) -> None:
    from contacts.suppression import Suppression, suppression_hash

    ana = ContactFactory(workspace=workspace, email="ana@example.com")
    run_campaign(campaign, at=at("2026-06-01T10:00"))
    Suppression.objects.create(
        workspace=workspace, email_hash=suppression_hash(workspace.pk, "ana@example.com"), reason="complaint"
    )

    run_campaign(campaign, at=at("2026-06-03T10:00"))

    assert Delivery.objects.filter(contact=ana).count() == 1
