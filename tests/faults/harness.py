"""The fault-injection harness: real processes on loopback, faults injected from outside, and a
reconciliation of the ledger (Delivery rows) against what the SES endpoint received.

- `Stack` owns everything one scenario starts: its own Redis (so it can be killed and restarted
  without touching the machine's shared Redis), the local SES endpoint as its own process, and
  "machines": process groups holding Celery workers and beats, as separate hosts would.
- `reconcile()` turns the end state into one row of the report table and the facts to assert.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.models import Campaign, Delivery, Message
from contacts.models import Contact
from crm.models import Workspace
from tests.e2e.processes import ROOT, beat_args, process_env, worker_args

TICK_TASK = "trickle: tick every minute"
FINAL = {Delivery.Status.SENT, Delivery.Status.FAILED, Delivery.Status.UNKNOWN, Delivery.Status.SKIPPED}
TEMPLATE_MESSAGE = re.compile(r"-m(\d+)-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on port {port} within {timeout}s")


def _descendants(pid: int) -> list[int]:
    """Child processes (a prefork worker's pool), read from /proc: no psutil needed."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    concurrency: int = 0
    restarted: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the process and its pool children at once, as a power cut or OOM kill would."""
        _signal([self.pid, *_descendants(self.pid)], signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, *, timeout: float = 60) -> None:
        """SIGTERM: Celery's warm shutdown (finish the running tasks, give the prefetched back)."""
        if not self.alive():
            return
        children = _descendants(self.pid)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
        _signal(children, signal.SIGKILL)  # a pool child orphaned by a crash must not linger

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name}\n{self.log.read_text(errors='replace')[-chars:]}" if self.log.exists() else ""


class Machine:
    """One process group standing in for one host: its workers and beat share the group."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.pgid = 0  # 0: the next process starts a new group and becomes its leader
        self.procs: list[Proc] = []
        self.restarts = 0

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        if self.pgid:
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                self.pgid = 0  # every member died: the next process leads a new group
        log = self.stack.logdir / f"{self.name}-{name}-{len(self.procs)}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            args, cwd=ROOT, env=env or self.stack.env, stdout=out, stderr=subprocess.STDOUT, process_group=self.pgid
        )
        out.close()
        self.pgid = self.pgid or popen.pid
        proc = Proc(f"{self.name}/{name}", popen, log)
        self.procs.append(proc)
        self.stack.procs.append(proc)
        return proc

    def worker(self, name: str = "worker", *, concurrency: int = 2) -> Proc:
        args = worker_args(f"{self.name}-{name}-{len(self.procs)}", concurrency=concurrency)
        proc = self._start(name, args)
        proc.concurrency = concurrency
        return proc

    def beat(self) -> Proc:
        return self._start("beat", beat_args(self.stack.logdir / f"{self.name}-beat-{len(self.procs)}.schedule"))

    def tick(self, at: datetime | None = None) -> Proc:
        """`manage.py tick [--at]` as a process of this machine (not waited for)."""
        args = [sys.executable, "manage.py", "tick", *(["--at", at.isoformat()] if at else [])]
        return self._start("tick", args)

    def supervise(self) -> int:
        """Do what systemd's Restart=always does: start a new worker for each one that exited.
        Returns how many were restarted."""
        dead = [p for p in self.procs if "/worker" in p.name and not p.alive() and not p.restarted]
        for proc in dead:
            proc.restarted = True
            self.worker(proc.name.split("/")[1], concurrency=proc.concurrency)
        self.restarts += len(dead)
        return len(dead)


class Stack:
    """Own Redis + SES endpoint process + machines, and the environment every process shares."""

    def __init__(self, logdir: Path, **env: str) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.redis_port = free_port()
        self.ses_port = free_port()
        self.redis: Proc | None = None
        self._start_redis()
        self.ses = self._own(
            "ses",
            [
                sys.executable,
                "tools/ses_endpoint.py",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ses_port),
                "--keep",
                "0",
            ],
        )
        _wait_port(self.ses_port, timeout=20, what="the SES endpoint")
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = process_env(
            REDIS_URL=redis_url,
            CELERY_BROKER_URL=redis_url,
            SES_ENDPOINT_URL=self.ses_url,
            EMAIL_BACKEND="anymail.backends.amazon_ses.EmailBackend",
            SES_BULK="true",
            SES_MAX_SEND_RATE="100000",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            DELIVERY_SENDING_TIMEOUT_SECONDS="3",
            DELIVERY_REQUEUE_AFTER_SECONDS="4",
            CELERY_TASK_ALWAYS_EAGER="false",
            LOG_LEVEL="WARNING",
            **env,
        )
        self.env.pop("AWS_PROFILE", None)

    @property
    def ses_url(self) -> str:
        return f"http://127.0.0.1:{self.ses_port}"

    def _own(self, name: str, args: list[str]) -> Proc:
        log = self.logdir / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- Redis ---------------------------------------------------------------------------------

    def _start_redis(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.redis = self._own("redis", [*args, "--daemonize", "no"])
        _wait_port(self.redis_port, timeout=10, what="redis-server")

    def restart_redis(self, *, down_for: float = 1.0) -> None:
        """Kill Redis hard (queue, unacked tasks, rate-limit bucket: all gone) and start it empty."""
        assert self.redis is not None
        self.redis.kill9()
        time.sleep(down_for)
        self._start_redis()

    # -- SES endpoint --------------------------------------------------------------------------

    def _ses(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.ses_url}{path}", data=data, method="POST" if data is not None else "GET"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def ses_configure(self, **faults: Any) -> dict[str, Any]:
        return self._ses("/_ses/config", faults)

    def ses_messages(self) -> list[dict[str, Any]]:
        return self._ses("/_ses/messages")

    def ses_stats(self) -> dict[str, Any]:
        return self._ses("/_ses/stats")

    # -- machines and the database -------------------------------------------------------------

    def machine(self, name: str) -> Machine:
        return Machine(self, name)

    def wait_for(self, condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        tails = "\n".join(p.tail() for p in self.procs)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")

    def settled(self, campaigns: list[Campaign], *, timeout: float, meanwhile: Callable[[], Any] = int) -> None:
        """Wait until every campaign ran today and no delivery is queued or sending, calling
        `meanwhile` on every poll (a supervisor restarting crashed workers, say)."""

        def done() -> bool:
            meanwhile()
            ran = all(Campaign.objects.get(pk=c.pk).last_run_on is not None for c in campaigns)
            busy = Delivery.objects.filter(campaign__in=campaigns).exclude(status__in=FINAL).exists()
            return ran and not busy

        self.wait_for(done, timeout=timeout, what="every delivery in a final state")

    def stop(self) -> None:
        """Stop every process still running: beats first, then all the rest at once (warm)."""
        running = [p for p in self.procs if p.alive()]
        for proc in sorted(running, key=lambda p: "/beat" not in p.name):
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in running:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill9()
        connection.close()


def terminate_backends() -> int:
    """Drop every other connection to this test database (never another database's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def enable_beat_ticks(*, every_seconds: int = 1) -> None:
    """The beat schedule (a flushed test database has none), ticking fast for housekeeping."""
    interval, _ = IntervalSchedule.objects.get_or_create(every=every_seconds, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=TICK_TASK,
        defaults={
            "task": "campaigns.tasks.tick",
            "interval": interval,
            "enabled": True,
            "last_run_at": timezone.now() - timedelta(minutes=5),
        },
    )


# ---------------------------------------------------------------- data


def drip(*, contacts: int, send_days: tuple[int, ...] = (0,), reject: tuple[str, ...] = ()) -> Campaign:
    """A workspace, `contacts` subscribed contacts (bulk-inserted) and an active campaign that is
    due from 00:00 UTC today, one message per send day."""
    workspace = Workspace.objects.create(
        slug=f"acme-{free_port()}", name="Acme", time_zone="UTC", default_from_email="hello@acme.test"
    )
    add_contacts(workspace, range(contacts), reject=reject)
    campaign = Campaign.objects.create(
        workspace=workspace, name="Faults", active=True, send_time=clock(0, 0), time_zone="UTC"
    )
    for day in send_days:
        Message.objects.create(
            campaign=campaign, send_day=day, subject=f"Day {day} for {{{{name}}}}", html_body="<p>Hi {{name}}</p>"
        )
    return campaign


def add_contacts(workspace: Workspace, numbers: range, *, reject: tuple[str, ...] = ()) -> None:
    rows = []
    for n in numbers:
        contact = Contact(workspace=workspace, email=f"person{n}@example.com", name=f"Person {n}")
        contact.refresh_keys()
        rows.append(contact)
    for address in reject:
        contact = Contact(workspace=workspace, email=address, name="Rejected")
        contact.refresh_keys()
        rows.append(contact)
    Contact.objects.bulk_create(rows, batch_size=2000)


def day_at(offset: int, *, minute: int = 1) -> datetime:
    """A moment `offset` days from today (UTC), a minute after the campaign's 00:00 slot."""
    today = timezone.now().astimezone(UTC).date()
    return datetime.combine(today + timedelta(days=offset), clock(0, minute), tzinfo=UTC)


# ---------------------------------------------------------------- reconciliation


@dataclass
class Reconciliation:
    scenario: str
    due: int
    sent: int
    failed: int
    unknown: int
    skipped: int
    duplicates: int
    lost: int
    # Facts behind the counts, for the assertions and their messages.
    unsent_but_received: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    unknown_ids: set[int] = field(default_factory=set)
    unknown_received: int = 0  # unknown rows SES did accept (the rest it never saw)
    failed_rows: list[tuple[str, str]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        keys = ("scenario", "due", "sent", "failed", "unknown", "unknown_received", "duplicates", "lost")
        return {key: getattr(self, key) for key in keys}

    def assert_clean(self) -> None:
        """The promise: nothing lost, nothing twice, and the ledger agrees with SES."""
        assert self.duplicates == 0, f"{self.duplicates} duplicate emails at SES"
        assert self.lost == 0, f"{self.lost} deliveries lost"
        assert not self.unsent_but_received, (
            f"SES received deliveries the ledger calls failed/queued/skipped: {self.unsent_but_received[:20]}"
        )
        assert self.sent + self.failed + self.unknown + self.skipped == self.due


def _delivery_id(record: dict[str, Any]) -> int | None:
    for name, value in record.get("headers") or []:
        if name.lower() == "x-trickle-delivery":
            return int(value)
    return None


def _message_key(record: dict[str, Any]) -> str:
    name = record.get("template_name") or ""
    match = TEMPLATE_MESSAGE.search(name)
    return f"message {match.group(1)}" if match else f"subject {record.get('subject', '')}"


def reconcile(stack: Stack, campaigns: list[Campaign], *, scenario: str) -> Reconciliation:
    """Compare the ledger with every email the SES endpoint accepted.

    - duplicates: extra emails for one delivery id (X-Trickle-Delivery), or for one recipient and
      one message (a second delivery row for the same email would not share the id);
    - lost: due deliveries not in a final state, plus deliveries the ledger calls `sent` that SES
      never received (or received under another message id);
    - unsent_but_received: SES has it but the ledger says failed/skipped/queued (a resend waiting).
    """
    rows = list(
        Delivery.objects.filter(campaign__in=campaigns, is_test=False).values_list(
            "id", "status", "provider_message_id", "contact__email", "error"
        )
    )
    received = stack.ses_messages()
    by_delivery: Counter[int] = Counter()
    by_recipient: Counter[tuple[str, str]] = Counter()
    ses_ids: dict[int, str] = {}
    for record in received:
        delivery_id = _delivery_id(record)
        assert delivery_id is not None, f"an email without X-Trickle-Delivery: {record.get('id')}"
        by_delivery[delivery_id] += 1
        ses_ids[delivery_id] = record["id"]
        for address in record["destination"]["to"]:
            by_recipient[(address.lower(), _message_key(record))] += 1
    duplicates = max(
        sum(n - 1 for n in by_delivery.values() if n > 1), sum(n - 1 for n in by_recipient.values() if n > 1)
    )
    counts: Counter[str] = Counter()
    lost = 0
    unsent_but_received = []
    result = Reconciliation(scenario, len(rows), 0, 0, 0, 0, duplicates, 0)
    for pk, status, provider_id, to_email, error in rows:
        counts[status] += 1
        if status not in FINAL:
            lost += 1
        elif status == Delivery.Status.SENT and ses_ids.get(pk) != provider_id:
            lost += 1  # the ledger claims an email SES does not have
        elif status in (Delivery.Status.FAILED, Delivery.Status.SKIPPED) and pk in by_delivery:
            unsent_but_received.append(pk)
        if status == Delivery.Status.FAILED:
            result.failed_rows.append((to_email, error))
        if status == Delivery.Status.UNKNOWN:
            result.unknown_ids.add(pk)
            result.unknown_received += pk in by_delivery
        if error:
            result.errors[error.split(":")[0][:60]] += 1
    # An email at SES for a delivery that is not in the ledger at all is a duplicate too.
    strangers = set(by_delivery) - {pk for pk, *_ in rows}
    result.duplicates += len(strangers)
    result.sent = counts[Delivery.Status.SENT]
    result.failed = counts[Delivery.Status.FAILED]
    result.unknown = counts[Delivery.Status.UNKNOWN]
    result.skipped = counts[Delivery.Status.SKIPPED]
    result.lost = lost
    result.unsent_but_received = unsent_but_received
    return result


def database_is_postgres() -> bool:
    return connection.vendor == "postgresql"
