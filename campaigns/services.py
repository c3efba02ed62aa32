"""The drip engine's workflows: the tick (enroll, schedule, dispatch) and sending one chunk.

Invariants (docs/architecture.md):
- at most once: a delivery row is claimed queued → sending by a conditional UPDATE before SES
  is called, and nothing ever moves a row from sending/sent/unknown back to queued except an
  SES answer that proves the email was not sent;
- one delivery per (enrollment, message) and per (enrollment, day): unique keys, so overlapping
  ticks are harmless;
- suppression wins: the send path re-checks the contact right before calling SES.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from campaigns import sending
from campaigns.models import Campaign, Delivery, Enrollment, Message, MessageContent
from campaigns.ratelimit import SendRateLimiter
from contacts.models import Contact
from contacts.suppression import Suppression

logger = logging.getLogger(__name__)


@dataclass
class TickReport:
    campaign_id: int
    campaign: str
    local_date: date
    enrolled: int = 0
    due: int = 0
    queued: int = 0
    skipped: int = 0
    active: bool = True


# ---------------------------------------------------------------- the tick


def run_tick(*, at: datetime | None = None, dry_run: bool = False) -> list[TickReport]:
    """Do every campaign's work that is due at `at` (default: now). Safe to run concurrently.

    With `dry_run`, every campaign that would be due at `at` (active or not) is computed inside
    a transaction that is rolled back, and nothing is dispatched: a preview with exact counts.
    """
    at = at or timezone.now()
    if not dry_run:
        mark_abandoned(now=timezone.now())
        requeue_lost(now=timezone.now())
    reports = []
    campaigns = Campaign.objects.select_related("workspace").order_by("pk")
    if not dry_run:
        campaigns = campaigns.active()
    for campaign in campaigns:
        if dry_run:
            campaign.active = True
        if not campaign.is_due(at):
            continue
        try:
            report = run_campaign(campaign, at=at, dry_run=dry_run)
        except Exception:
            # One broken campaign (a filter that no longer compiles, say) must not stop the others;
            # its transaction rolled back, so it is simply tried again next tick.
            logger.exception("tick failed for campaign=%s", campaign.pk)
            if dry_run:
                raise
            continue
        if report is not None:
            reports.append(report)
    return reports


def run_campaign(campaign: Campaign, *, at: datetime, dry_run: bool = False) -> TickReport | None:
    """Enroll and schedule one campaign for its local day. Returns None when another tick holds
    the campaign or has already done today's work."""
    today = campaign.local_date(at)
    report = TickReport(
        campaign.pk, campaign.name, today, active=Campaign.objects.filter(pk=campaign.pk, active=True).exists()
    )
    with transaction.atomic():
        # The row lock is the per-campaign lock: held only inside this transaction, so a tick
        # killed half-way leaves nothing behind to block the next one. On SQLite the IMMEDIATE
        # transaction serialises writers instead.
        pending = Q(last_run_on__isnull=True) | Q(last_run_on__lt=today)
        locked = Campaign.objects.select_for_update(skip_locked=True).filter(pending, pk=campaign.pk).first()
        if locked is None:
            return None
        report.enrolled = enroll(campaign, at=at)
        report.due = schedule(campaign, on=today)
        report.skipped = campaign.matching_contacts(now=at).exclude(status=Contact.Status.SUBSCRIBED).count()
        Campaign.objects.filter(pk=campaign.pk).update(last_run_on=today)
        if dry_run:
            transaction.set_rollback(True)
    if not dry_run:
        if report.enrolled + report.due >= settings.TICK_ANALYZE_ROWS:
            refresh_planner_statistics()
        report.queued = dispatch(Delivery.objects.filter(campaign=campaign, scheduled_on=today).queued())
    else:
        report.queued = report.due
    logger.info(
        "tick campaign=%s day=%s enrolled=%s due=%s queued=%s skipped=%s dry_run=%s",
        campaign.pk, today, report.enrolled, report.due, report.queued, report.skipped, dry_run,
    )  # fmt: skip
    return report


def enrollable_contacts(campaign: Campaign, *, at: datetime) -> QuerySet[Contact]:
    already = Enrollment.objects.filter(campaign_id=campaign.pk, contact_id=OuterRef("pk"))
    return campaign.matching_contacts(now=at).subscribed().not_suppressed().exclude(Exists(already))


def enroll(campaign: Campaign, *, at: datetime) -> int:
    """Enroll every eligible contact in one INSERT … SELECT; returns how many were enrolled."""
    select_sql, params = _sql(enrollable_contacts(campaign, at=at).values("id"))
    ops = connection.ops
    # The SELECT is the ORM's own compiled SQL with its parameters; nothing user-typed is spliced.
    sql = (
        f"INSERT INTO {_table(Enrollment)} (campaign_id, contact_id, enrolled_at, enrolled_on) "  # noqa: S608
        f"SELECT %s, m.id, %s, %s FROM ({select_sql}) m WHERE true ON CONFLICT DO NOTHING"
    )
    at_db = ops.adapt_datetimefield_value(at)
    day_db = ops.adapt_datefield_value(campaign.local_date(at))
    return _execute_bulk(sql, [campaign.pk, at_db, day_db, *params])


def schedule(campaign: Campaign, *, on: date) -> int:
    """Create today's queued deliveries: for each enrollment, the earliest message that is due
    (enrolled_on + send_day ≤ today) and not yet delivered, at most one per enrollment per day.

    Messages are walked in send_day order and each pass excludes enrollments that already got a
    delivery today, so a contact who missed several slots catches up one message per day, in order.
    """
    total = 0
    ops = connection.ops
    now_db = ops.adapt_datetimefield_value(timezone.now())
    on_db = ops.adapt_datefield_value(on)
    for message in Message.objects.filter(campaign_id=campaign.pk).order_by("send_day"):
        due = (
            Enrollment.objects.filter(
                campaign_id=campaign.pk,
                enrolled_on__lte=on - timedelta(days=message.send_day),
                contact__status=Contact.Status.SUBSCRIBED,
            )
            .exclude(Exists(Delivery.objects.filter(enrollment_id=OuterRef("pk"), message_id=message.pk)))
            .exclude(Exists(Delivery.objects.filter(enrollment_id=OuterRef("pk"), scheduled_on=on)))
            .exclude(Suppression.objects.matching_contact("contact"))
            .values("id", "contact_id")
        )
        select_sql, params = _sql(due)
        sql = (
            f"INSERT INTO {_table(Delivery)} (campaign_id, message_id, enrollment_id, contact_id, is_test, "  # noqa: S608
            "to_email, status, scheduled_on, claim, attempts, provider_message_id, error, created_at, updated_at) "
            f"SELECT %s, %s, d.id, d.contact_id, %s, '', %s, %s, '', 0, '', '', %s, %s FROM ({select_sql}) d "
            "WHERE true ON CONFLICT DO NOTHING"
        )
        total += _execute_bulk(
            sql, [campaign.pk, message.pk, False, Delivery.Status.QUEUED, on_db, now_db, now_db, *params]
        )
    return total


def refresh_planner_statistics() -> None:
    """ANALYZE the tables a big tick just grew. Until autovacuum gets to them, PostgreSQL still
    believes few deliveries are queued and plans the workers' claim (`id IN (…) AND status =
    'queued'`) as a scan of the whole status index: measured 500 µs of database CPU per email
    instead of 140 (docs/benchmarks.md). Sampling costs well under a second."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {_table(Delivery)}, {_table(Enrollment)}")


def dispatch(deliveries: QuerySet[Delivery]) -> int:
    """Hand queued deliveries to workers in chunks of one message each. Returns how many."""
    from campaigns import tasks

    count = 0
    for chunk in _chunks_by_message(deliveries.values_list("id", "message_id").order_by("message_id", "id")):
        task = tasks.send_deliveries.delay(chunk)
        # DEBUG: a million-contact tick dispatches 2,000 tasks of 500 ids; the tick's own INFO line
        # has the totals, and the worker's INFO lines name every delivery it claims and sends.
        logger.debug(
            "dispatched task=%s deliveries=%s",
            task.id,
            len(chunk),
            extra={"delivery_ids": chunk, "dispatched_task_id": task.id},
        )
        count += len(chunk)
    return count


def _chunks_by_message(rows: QuerySet[Any]) -> Iterator[list[int]]:
    size = settings.DELIVERY_CHUNK_SIZE
    chunk: list[int] = []
    current = None
    for delivery_id, message_id in rows.iterator(chunk_size=10_000):
        if chunk and (message_id != current or len(chunk) >= size):
            yield chunk
            chunk = []
        current = message_id
        chunk.append(delivery_id)
    if chunk:
        yield chunk


def mark_abandoned(*, now: datetime) -> int:
    """Deliveries stuck in `sending` past the timeout were held by a worker that died mid-send.
    SES may or may not have sent them: they become `unknown` and are reported, never resent."""
    timeout = timedelta(seconds=settings.DELIVERY_SENDING_TIMEOUT_SECONDS)
    count = Delivery.objects.stale_sending(now=now, timeout=timeout).update(
        status=Delivery.Status.UNKNOWN,
        error="The worker stopped while sending; SES may or may not have sent it. Not resent.",
        updated_at=now,
    )
    if count:
        logger.warning("deliveries abandoned in sending marked unknown count=%s", count)
    return count


def requeue_lost(*, now: datetime) -> int:
    """Queued deliveries no worker picked up for a long time (their task was lost with a Redis
    restart) are dispatched again. Harmless if the old task still exists: the claim is atomic."""
    cutoff = now - timedelta(seconds=settings.DELIVERY_REQUEUE_AFTER_SECONDS)
    stale = Delivery.objects.queued().filter(updated_at__lt=cutoff)
    ids = list(stale.values_list("id", flat=True)[:100_000])
    if not ids:
        return 0
    Delivery.objects.filter(id__in=ids, status=Delivery.Status.QUEUED).update(updated_at=now)
    count = dispatch(Delivery.objects.filter(id__in=ids).queued())
    logger.warning("queued deliveries re-dispatched count=%s", count)
    return count


# ---------------------------------------------------------------- sending


@dataclass
class SendReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    retried: int = 0


def send_deliveries(*, delivery_ids: list[int]) -> SendReport:
    """Claim and send a chunk of deliveries (normally all of one message). At most once each.

    The hot path of the engine, so it works on plain rows, not model instances. The chunk is
    claimed and sent one SES call's worth (50) at a time: one conditional UPDATE … RETURNING
    claims the rows, one query reads their contacts with the filter re-check, one token take,
    one SendBulkEmail, one UPDATE records every outcome. A worker killed mid-chunk leaves at
    most one call's worth in `sending` (→ unknown); the rest stay queued for the next dispatch.
    """
    report = SendReport()
    messages: dict[int, _MessageContext] = {}
    ids = sorted(set(delivery_ids))
    for start in range(0, len(ids), sending.BULK_MAX):
        _send_batch(ids[start : start + sending.BULK_MAX], messages=messages, report=report)
    return report


@dataclass
class _MessageContext:
    """What every email of one message shares, computed once per task."""

    message: Message
    content: MessageContent
    list_id: str


def _send_batch(ids: list[int], *, messages: dict[int, _MessageContext], report: SendReport) -> None:
    token = uuid.uuid4().hex
    claimed = _claim(ids, token)
    report.claimed += len(claimed)
    if not claimed:
        logger.info("claimed nothing (already taken or finished)", extra={"delivery_ids": ids})
        return
    offered: set[int] = set()  # handed to SES: from then on only SES's answer decides
    try:
        groups: dict[int, list[_Claimed]] = defaultdict(list)
        for row in claimed:
            groups[row.message_id].append(row)
        for message_id, group in groups.items():
            if message_id not in messages:
                message = Message.objects.select_related("campaign__workspace").get(pk=message_id)
                messages[message_id] = _MessageContext(message, message.content(), sending.list_id(message.campaign))
            logger.info(
                "claimed %s of %s deliveries", len(group), len(ids),
                extra={"delivery_ids": [r.pk for r in group], "campaign_id": messages[message_id].message.campaign_id},
            )  # fmt: skip
            _send_group(messages[message_id], group, token=token, report=report, offered=offered)
    except (OperationalError, InterfaceError):
        # The database went away after the claim. Rows not yet handed to SES were certainly not
        # sent: back to queued for requeue_lost, rather than `unknown` after the sending timeout.
        if not connection.in_atomic_block:
            connection.close()
            try:
                _release([row.pk for row in claimed if row.pk not in offered], token)
            except (OperationalError, InterfaceError):
                logger.warning("database still unreachable; claimed deliveries left to the sweeper")
        raise


def _release(ids: list[int], token: str) -> int:
    """Give claimed rows that SES never saw back to the queue."""
    if not ids:
        return 0
    return _owned(ids, token).update(status=Delivery.Status.QUEUED, claim="", updated_at=timezone.now())


@dataclass
class _Claimed:
    """A delivery this worker claimed, with its contact as plain data (None: contact deleted)."""

    pk: int
    message_id: int
    contact_id: int | None
    is_test: bool
    to_email: str
    attempts: int
    contact: dict[str, Any] | None = None
    subscribed: bool = False
    matching: bool = False
    suppressed: bool = False
    unsubscribe_token: str = ""

    @property
    def address(self) -> str:
        return self.to_email if self.is_test or self.contact is None else self.contact["email"]


def _claim(delivery_ids: list[int], token: str) -> list[_Claimed]:
    """queued → sending with our claim token, in one conditional UPDATE; only these rows are ours."""
    if not delivery_ids:
        return []
    ids = sorted(set(delivery_ids))
    marks = ", ".join(["%s"] * len(ids))
    sql = (
        f"UPDATE {_table(Delivery)} SET status = %s, claim = %s, claimed_at = %s, attempts = attempts + 1 "  # noqa: S608
        f"WHERE id IN ({marks}) AND status = %s "
        "RETURNING id, message_id, contact_id, is_test, to_email, attempts"
    )
    now_db = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [Delivery.Status.SENDING, token, now_db, *ids, Delivery.Status.QUEUED])
        rows = [_Claimed(pk, m, c, bool(t), e, a) for pk, m, c, t, e, a in cursor.fetchall()]
    rows.sort(key=lambda r: r.pk)
    return rows


def _load_contacts(campaign: Campaign, rows: list[_Claimed]) -> None:
    """Each row's contact data, and whether it is still subscribed and still matches, in one query."""
    contact_ids = {row.contact_id for row in rows if row.contact_id is not None}
    if not contact_ids:
        return
    # The same conditions as Campaign.matching_contacts(): the workspace, not archived, the filter.
    matches = Q(workspace_id=campaign.workspace_id, archived_at__isnull=True) & campaign.contact_q()
    found = {
        pk: (data, status, token, matching, suppressed)
        for pk, *data, status, token, matching, suppressed in Contact.objects.filter(id__in=contact_ids)
        .annotate(
            matching=Case(When(matches, then=Value(True)), default=Value(False), output_field=BooleanField()),
            suppressed=Suppression.objects.matching_contact(),
        )
        .values_list(
            "id", "name", "email", "company", "attributes", "status", "unsubscribe_token", "matching", "suppressed"
        )
        .order_by()
    }
    for row in rows:
        if row.contact_id in found:
            (name, email, company, attributes), status, token, matching, suppressed = found[row.contact_id]
            row.suppressed = bool(suppressed)
            row.contact = {"name": name, "email": email, "company": company, "attributes": dict(attributes or {})}
            row.subscribed = status == Contact.Status.SUBSCRIBED
            row.matching = bool(matching)
            row.unsubscribe_token = token


def _send_group(
    context: _MessageContext, rows: list[_Claimed], *, token: str, report: SendReport, offered: set[int]
) -> None:
    message = context.message
    campaign = message.campaign
    _load_contacts(campaign, rows)
    skipped = _skip_reasons(rows)
    for reason, ids in _invert(skipped).items():
        report.skipped += _finish(ids, token, status=Delivery.Status.SKIPPED, error=reason)
        logger.info("skipped: %s", reason, extra={"delivery_ids": ids, "campaign_id": campaign.pk})
    sendable = [row for row in rows if row.pk not in skipped]
    if not sendable:
        return
    limiter = SendRateLimiter.for_ses()
    parts = list(_parts(sendable, limiter.max_batch))
    for index, part in enumerate(parts):
        envelopes = [_envelope(row, list_id=context.list_id) for row in part]
        try:
            limiter.acquire(len(envelopes))
        except Exception:
            # No token (Redis gone, or the wait timed out): SES was never called for this part or
            # the ones after it, so they go back to queued for requeue_lost rather than sit in
            # `sending` until the sweeper calls them unknown and they are never sent.
            logger.exception("send rate limiter unavailable; deliveries back to queued")
            _release([row.pk for rest in parts[index:] for row in rest], token)
            return
        offered.update(row.pk for row in part)
        results = sending.send(campaign=campaign, message=message, envelopes=envelopes, content=context.content)
        logger.info(
            "ses answered for %s deliveries", len(results),
            extra={
                "campaign_id": campaign.pk, "delivery_ids": list(results),
                "outcomes": {pk: r.outcome.value for pk, r in results.items()},
                "ses_message_ids": {pk: r.message_id for pk, r in results.items() if r.message_id},
            },
        )  # fmt: skip
        _record_durably(part, results, token=token, report=report)


def _record_durably(
    rows: list[_Claimed], results: dict[int, sending.Result], *, token: str, report: SendReport
) -> None:
    """Record SES's answers, reconnecting if the database connection dropped meanwhile: SES has
    answered, and losing that answer would turn emails it accepted into `unknown`."""
    for pause in (0.5, 2.0, None):
        try:
            _record(rows, results, token=token, report=report)
            return
        except (OperationalError, InterfaceError):
            if pause is None or connection.in_atomic_block:
                raise
            logger.warning("database connection lost while recording SES answers; reconnecting", exc_info=True)
            connection.close()
            time.sleep(pause)


def _skip_reasons(rows: list[_Claimed]) -> dict[int, str]:
    """Why each delivery must not be sent any more, checked right before sending."""
    reasons: dict[int, str] = {}
    for row in rows:
        if row.is_test:
            continue
        if row.contact is None:
            reasons[row.pk] = "contact deleted"
        elif row.suppressed:
            # Suppression wins over everything, even a contact record that still says subscribed.
            reasons[row.pk] = "suppressed"
        elif not row.subscribed:
            reasons[row.pk] = "unsubscribed"
        elif not row.matching:
            reasons[row.pk] = "contact no longer matches the campaign filter"
    return reasons


def _envelope(row: _Claimed, *, list_id: str) -> sending.Envelope:
    if row.is_test:
        # A test must never unsubscribe the sample contact whose data it borrows.
        unsubscribe = sending.unsubscribe_url("test-preview")
        data = row.contact or sending.sample_data(row.to_email)
        to = row.to_email
    else:
        assert row.contact is not None
        unsubscribe = sending.unsubscribe_url(row.unsubscribe_token)
        data = row.contact
        to = row.contact["email"]
    return sending.Envelope(
        delivery_id=row.pk,
        to=to,
        data=sending.template_data(data, unsubscribe=unsubscribe),
        headers=sending.headers_for(list_id=list_id, delivery_id=row.pk, unsubscribe=unsubscribe),
    )


def _record(rows: list[_Claimed], results: dict[int, sending.Result], *, token: str, report: SendReport) -> None:
    now = timezone.now()
    by_id = {row.pk: row for row in rows}
    sent = [(pk, r.message_id, by_id[pk].address) for pk, r in results.items() if r.outcome is sending.Outcome.SENT]
    if sent:
        report.sent += _mark_sent(sent, token, now=now)
    retry_ids: list[int] = []
    for pk, result in results.items():
        if result.outcome is sending.Outcome.FAILED:
            report.failed += _finish([pk], token, status=Delivery.Status.FAILED, error=result.error)
        elif result.outcome is sending.Outcome.UNKNOWN:
            report.unknown += _finish([pk], token, status=Delivery.Status.UNKNOWN, error=result.error)
            logger.error("delivery outcome unknown delivery=%s error=%s", pk, result.error)
        elif result.outcome is sending.Outcome.RETRY:
            if by_id[pk].attempts >= settings.DELIVERY_MAX_ATTEMPTS:
                error = f"Gave up after {by_id[pk].attempts} attempts: {result.error}"
                report.failed += _finish([pk], token, status=Delivery.Status.FAILED, error=error)
            else:
                retry_ids.append(pk)
    if retry_ids:
        # SES said no without sending: back to queued (nothing lost), tried again with backoff.
        requeued = _owned(retry_ids, token).update(
            status=Delivery.Status.QUEUED, claim="", error=results[retry_ids[0]].error, updated_at=now
        )
        report.retried += requeued
        attempts = max(by_id[pk].attempts for pk in retry_ids)
        countdown = min(300, 2**attempts) * (0.5 + random.random())  # jitter spreads the herd
        from campaigns import tasks

        transaction.on_commit(lambda: tasks.send_deliveries.apply_async((retry_ids,), countdown=countdown))


def _mark_sent(sent: list[tuple[int, str, str]], token: str, *, now: datetime) -> int:
    """One UPDATE for a whole SES call: each row gets its own provider id and address.

    Plain SQL with CASE rather than the ORM's Case(When…): building 2 x 50 ORM expressions cost
    more CPU than the SES call itself."""
    ops = connection.ops
    now_db = ops.adapt_datetimefield_value(now)
    ids = [pk for pk, _, _ in sent]
    message_ids = " ".join(["WHEN %s THEN %s"] * len(sent))
    addresses = " ".join(["WHEN %s THEN %s"] * len(sent))
    marks = ", ".join(["%s"] * len(sent))
    sql = (
        f"UPDATE {_table(Delivery)} SET status = %s, sent_at = %s, error = '', updated_at = %s, "  # noqa: S608
        f"provider_message_id = CASE id {message_ids} END, to_email = CASE id {addresses} END "
        f"WHERE id IN ({marks}) AND claim = %s AND status IN (%s, %s)"
    )
    params: list[Any] = [Delivery.Status.SENT, now_db, now_db]
    for pk, message_id, _ in sent:
        params += [pk, message_id]
    for pk, _, address in sent:
        params += [pk, address]
    params += [*ids, token, Delivery.Status.SENDING, Delivery.Status.UNKNOWN]
    return _execute(sql, params)


def _owned(ids: list[int], token: str) -> QuerySet[Delivery]:
    # Only rows this worker claimed; `unknown` too, in case the sweeper gave up on us too early
    # and SES's answer arrives after all: the truth wins.
    return Delivery.objects.filter(
        id__in=ids, claim=token, status__in=[Delivery.Status.SENDING, Delivery.Status.UNKNOWN]
    )


def _finish(ids: Iterable[int], token: str, *, status: str, error: str) -> int:
    return _owned(list(ids), token).update(status=status, error=error, updated_at=timezone.now())


def _invert(reasons: dict[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for pk, reason in reasons.items():
        out[reason].append(pk)
    return out


def _parts(rows: list[_Claimed], size: int) -> Iterator[list[_Claimed]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# ---------------------------------------------------------------- test sends


def send_test(*, message: Message, to_email: str, sample: Contact | None = None) -> Delivery:
    """Send one message to an operator through the same path; marked as a test, never counted."""
    delivery = Delivery.objects.create(
        campaign_id=message.campaign_id,
        message=message,
        contact=sample,
        is_test=True,
        to_email=to_email,
        status=Delivery.Status.QUEUED,
    )
    from campaigns import tasks

    transaction.on_commit(lambda: tasks.send_deliveries.delay([delivery.pk]))
    return delivery


# ---------------------------------------------------------------- SQL helpers


def _sql(queryset: QuerySet[Any]) -> tuple[str, tuple[Any, ...]]:
    return queryset.query.get_compiler(connection=connection).as_sql()


def _table(model: type[Any]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _execute_bulk(sql: str, params: list[Any]) -> int:
    """Run one of the tick's set-based INSERT … SELECTs with hash joins, never nested loops.

    The anti-joins (`NOT EXISTS` an enrollment / a delivery) are planned from statistics that
    know nothing of a new campaign or of the rows this same transaction just inserted; PostgreSQL
    then estimates one row and picks a nested loop that rescans an index on `campaign_id` or
    `message_id` once per outer row, walking every entry the statement itself has added: quadratic
    (an INSERT of 100,000 deliveries ran for minutes). Hash anti-joins are linear whatever the
    estimate. SET LOCAL ends with the transaction; SQLite plans correlated EXISTS as index probes.
    """
    if connection.vendor != "postgresql":
        return _execute(sql, params)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_nestloop = off")
        cursor.execute(sql, params)
        count = max(cursor.rowcount, 0)
        cursor.execute("SET LOCAL enable_nestloop = on")
        return count


def _execute(sql: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return max(cursor.rowcount, 0)
