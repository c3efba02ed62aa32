"""Property tests for the due-date arithmetic: random IANA zones, DST-crossing dates, send times in
gaps and folds, random send days.

The contract, precisely (`Campaign.slot`, `Campaign.is_due`, `run_campaign`):

1. `slot(d)` is an aware instant. When the wall time `d send_time` exists, the slot's local wall
   time is exactly that (in a fold, the first of the two instants). When it falls in a gap (clocks
   jump forward), the slot is the wall time shifted forward by the length of the gap, in the new
   offset: its local date is `d`, or `d + 1` only if the gap runs past midnight.
2. Over the instants whose local date is `d`, `is_due` is False before `slot(d)` and True from it
   on; once the day's work is done (`last_run_on = d`) it is False for the rest of `d` and True
   again from `slot(d + 1)`. A day whose slot was pushed past midnight is never due on its own
   date; its work is done at the next day's slot.
3. Ticking at every day's slot, the engine enrolls a contact on the local date of the first tick
   that sees it and creates each message's delivery exactly on `enrolled_on + send_day`, once.
"""

from __future__ import annotations

import os
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from functools import cache

import pytest
from django.db import transaction
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from campaigns.models import Campaign, Delivery, Enrollment
from campaigns.services import run_campaign
from crm.models import Workspace
from tests.celery_queue import CeleryQueue
from tests.factories import CampaignFactory, ContactFactory, MessageFactory

# A fixed sample keeps CI runs comparable; Hypothesis still picks among ~600 zones.
ZONES = sorted(zoneinfo.available_timezones() - {"Factory", "localtime"})
FIRST_YEAR, LAST_YEAR = 1995, 2037
MICRO = timedelta(microseconds=1)


def bounded(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        # Fixed examples in CI (a red build is always reproducible); fresh ones on developers' runs.
        derandomize=bool(os.environ.get("CI")),
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def wall(instant: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def exists(naive: datetime, zone: zoneinfo.ZoneInfo) -> bool:
    return wall(naive.replace(tzinfo=zone).astimezone(UTC), zone) == naive


@cache
def transition_days(name: str, year: int) -> tuple[date, ...]:
    """Local dates in `year` on which the zone's UTC offset changes (DST, or a law)."""
    zone = zoneinfo.ZoneInfo(name)
    days = []
    day = date(year, 1, 1)
    while day.year == year:
        start = datetime.combine(day, time(0), tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        if start.utcoffset() != end.utcoffset():
            days.append(day)
        day += timedelta(days=1)
    return tuple(days)


@cache
def odd_times(name: str, day: date) -> tuple[time, ...]:
    """Wall times (per minute) on `day` that fall in a gap or a fold, around the transition."""
    zone = zoneinfo.ZoneInfo(name)
    out = []
    for minute in range(0, 24 * 60):
        naive = datetime.combine(day, time(minute // 60, minute % 60))
        first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        if first.utcoffset() != second.utcoffset():
            out.append(naive.time())
    return tuple(out)


@st.composite
def zone_day_time(draw: st.DrawFn) -> tuple[str, date, time]:
    name = draw(st.sampled_from(ZONES))
    year = draw(st.integers(FIRST_YEAR, LAST_YEAR))
    transitions = transition_days(name, year)
    if transitions and draw(st.booleans()):
        day = draw(st.sampled_from(transitions)) + timedelta(days=draw(st.integers(-1, 1)))
    else:
        day = draw(st.dates(date(year, 1, 1), date(year, 12, 31)))
    odd = odd_times(name, day)
    if odd and draw(st.booleans()):
        send_time = draw(st.sampled_from(odd))
    else:
        send_time = draw(st.times().map(lambda t: t.replace(second=0, microsecond=0, fold=0)))
    return name, day, send_time


def campaign_in(name: str, send_time: time) -> Campaign:
    # Unsaved: slot() and is_due() are pure functions of these fields.
    return Campaign(workspace=Workspace(time_zone="UTC"), time_zone=name, send_time=send_time, active=True)


def start_of_day(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant whose local date is `day` (local midnight, or the end of a gap over it), in UTC."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@bounded(300)
@given(zone_day_time())
def test_the_slot_is_the_send_time_on_that_local_date_or_just_after_a_gap(case: tuple[str, date, time]) -> None:
    name, day, send_time = case
    zone = zoneinfo.ZoneInfo(name)
    slot = campaign_in(name, send_time).slot(day)
    naive = datetime.combine(day, send_time)

    assert slot.tzinfo is not None and slot.utcoffset() is not None
    if exists(naive, zone):
        assert wall(slot, zone) == naive
        # In a fold the first of the two instants: never an hour late.
        assert slot.astimezone(UTC) == naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    else:
        gap = naive.replace(tzinfo=zone, fold=1).utcoffset() - naive.replace(tzinfo=zone, fold=0).utcoffset()
        assert gap > timedelta(0)
        assert wall(slot, zone) == naive + gap
        assert slot.utcoffset() == naive.replace(tzinfo=zone, fold=1).utcoffset()
        assert wall(slot, zone).date() in (day, day + timedelta(days=1))
        if wall(slot, zone).date() != day:
            # Only a gap that runs past midnight may push the slot to the next date.
            assert not exists(datetime.combine(day + timedelta(days=1), time(0)), zone)


@bounded(200)
@given(zone_day_time(), st.lists(st.floats(0, 1, exclude_max=True), min_size=3, max_size=3))
def test_is_due_flips_exactly_once_per_local_day(case: tuple[str, date, time], fractions: list[float]) -> None:
    name, day, send_time = case
    zone = zoneinfo.ZoneInfo(name)
    campaign = campaign_in(name, send_time)
    # In UTC: arithmetic and comparisons on datetimes sharing a ZoneInfo are on wall time.
    slot = campaign.slot(day).astimezone(UTC)
    begin, end = start_of_day(day, zone), start_of_day(day + timedelta(days=1), zone)
    assume(begin < end)  # a date a zone skipped entirely (Pacific/Apia, 2011-12-30) has no instants
    probes = {begin, end - MICRO, slot - MICRO, slot, slot + MICRO}
    probes |= {begin + (end - begin) * f for f in fractions}
    # (A fall-back over midnight can make an hour of `day` read as the day before: not `day`'s.)
    in_day = sorted(p for p in probes if begin <= p < end and campaign.local_date(p) == day)

    assert [campaign.is_due(p) for p in in_day] == [p >= slot for p in in_day]
    if slot < end:
        assert campaign.is_due(slot)

    campaign.last_run_on = day
    assert not any(campaign.is_due(p) for p in in_day)
    next_slot = campaign.slot(day + timedelta(days=1)).astimezone(UTC)
    assert not campaign.is_due(next_slot - MICRO)
    if campaign.local_date(next_slot) == day + timedelta(days=1):
        assert campaign.is_due(next_slot)


@pytest.mark.django_db
@bounded(12)
@given(
    case=zone_day_time(),
    send_days=st.sets(st.integers(0, 6), min_size=1, max_size=3),
    late_by=st.integers(0, 3),
)
def test_the_engine_sends_each_message_exactly_on_enrolled_on_plus_send_day(
    workspace: Workspace, celery_queue: CeleryQueue, case: tuple[str, date, time], send_days: set[int], late_by: int
) -> None:
    name, first_day, send_time = case
    days = [first_day + timedelta(days=n) for n in range(max(send_days) + late_by + 1)]
    probe = campaign_in(name, send_time)
    # Days whose slot a gap pushed past midnight are covered by the slot property above.
    assume(all(probe.local_date(probe.slot(d)) == d for d in days))

    with transaction.atomic():
        campaign = CampaignFactory(workspace=workspace, time_zone=name, send_time=send_time, contact_filter="")
        for send_day in sorted(send_days):
            MessageFactory(campaign=campaign, send_day=send_day)
        early = ContactFactory(workspace=workspace)
        for index, day in enumerate(days):
            if index == late_by:
                late = ContactFactory(workspace=workspace)
            campaign.refresh_from_db()
            slot = campaign.slot(day).astimezone(UTC)
            assert campaign.is_due(slot)
            assert run_campaign(campaign, at=slot) is not None
            # A second tick the same day does nothing.
            campaign.refresh_from_db()
            assert not campaign.is_due(slot + timedelta(minutes=1))
            assert run_campaign(campaign, at=slot) is None

        enrolled = {e.contact_id: e.enrolled_on for e in Enrollment.objects.filter(campaign=campaign)}
        assert enrolled == {early.pk: days[0], late.pk: days[late_by]}
        for contact in (early, late):
            got = sorted(
                Delivery.objects.filter(campaign=campaign, contact=contact).values_list(
                    "message__send_day", "scheduled_on"
                )
            )
            expected = sorted(
                (send_day, enrolled[contact.pk] + timedelta(days=send_day))
                for send_day in send_days
                if enrolled[contact.pk] + timedelta(days=send_day) <= days[-1]
            )
            assert got == expected
        transaction.set_rollback(True)


def test_the_strategies_reach_gaps_and_folds() -> None:
    """Guards the generator: without odd times the properties above would test little."""
    assert odd_times("Europe/Malta", date(2026, 3, 29))[0] == time(2, 0)
    assert odd_times("Europe/Malta", date(2026, 10, 25))[0] == time(2, 0)
    assert date(2026, 3, 29) in transition_days("Europe/Malta", 2026)
    assert not exists(datetime(2026, 3, 29, 2, 30), zoneinfo.ZoneInfo("Europe/Malta"))
