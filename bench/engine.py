"""Benchmark of the drip engine on PostgreSQL: the tick (enroll + schedule + dispatch) and the send path.

Not a test: it prints figures (see docs/benchmarks.md). It owns its database (default
`trickle_bench_engine`, created and migrated here) and wipes the campaign and contact tables in it.

    .venv/bin/python bench/engine.py                                  # N = 100k and 1M, sends 50k/100k
    .venv/bin/python bench/engine.py --contacts 100000 --sends 50000 --repeat 2
    .venv/bin/python bench/engine.py --contacts 1000000 --no-send       # tick only

Tick: N contacts (half match `language=en`) are generated set-based (one INSERT … SELECT
generate_series); a 3-message campaign (days 0, 2, 5) is ticked by `campaigns.services.run_campaign`
in a child process, on day 0 (enroll N/2, schedule N/2) and on day 2 (schedule N/2 against the
N/2 existing deliveries). Reported: enroll, schedule, dispatch and total seconds, and the child's
peak RSS. The dispatched tasks go to a throw-away queue that is deleted afterwards.

Send: S queued deliveries of a one-message campaign are dispatched to real Celery workers
(prefork by default) consuming from Redis, sending through SES_BULK (SendBulkEmail, 50 a call)
to tools/ses_endpoint.py run as its own process, answering instantly and after 50 ms. Timed from
the start of dispatch until no delivery is queued or sending. SES_MAX_SEND_RATE is set to 10**6 so
the shared token bucket never binds (each take is still one Redis round trip, as in production).
Worker RSS is sampled from /proc every 0.2 s (sum over the worker's processes, and the largest one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/trickle_bench_engine"
SEND_QUEUE = "trickle-bench-send"
TICK_QUEUE = "trickle-bench-tick-discard"
PREFIX = "trickle-bench"

HTML = """<html><body><p>Hi {{#if name}}{{name}}{{else}}there{{/if}},</p>
<p>Welcome to Acme{{#if company}} and {{company}}{{/if}}. Here is day {{attributes.language}} of your trial.</p>
<p><a href="https://acme.example/start">Get started</a></p></body></html>"""


def setup_django(queue: str) -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DB)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["CELERY_QUEUE"] = queue
    os.environ["REDIS_PREFIX"] = PREFIX
    import django

    django.setup()


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB of one process, (0, 0) if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return int(fields.get("VmRSS", "0 kB").split()[0]), int(fields.get("VmHWM", "0 kB").split()[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backends() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [pid for (pid,) in cursor.fetchall()]


def descendants(pid: int) -> list[int]:
    out = [pid]
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            for c in child.read_text().split():
                out.extend(descendants(int(c)))
        except OSError:
            pass
    return out


# ---------------------------------------------------------------- data


def create_database() -> None:
    import psycopg

    url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)


def generate(n: int, *, reuse: bool = False) -> tuple[Any, float]:
    """Empty the engine's tables, then N contacts in one statement (even ids match language=en).
    With `reuse`, N contacts already there are kept (the tick never changes contacts)."""
    from django.db import connection

    from crm.models import Workspace

    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE campaigns_delivery, campaigns_enrollment, campaigns_message, campaigns_campaign "
            "RESTART IDENTITY CASCADE"
        )
        cursor.execute("SELECT count(*), count(DISTINCT workspace_id) FROM contacts_contact")
        if cursor.fetchone() == (n, 1) and (reuse or os.environ.get("BENCH_REUSE_CONTACTS")):
            return Workspace.objects.get(slug="bench"), 0.0
        cursor.execute("TRUNCATE contacts_contact, crm_activity RESTART IDENTITY CASCADE")
    workspace, _ = Workspace.objects.get_or_create(
        slug="bench", defaults={"name": "Bench", "time_zone": "UTC", "default_from_email": "hello@acme.example"}
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO contacts_contact (workspace_id, email, email_key, name, phone, phone_digits, company,
                attributes, source, status, unsubscribe_token, created_at, updated_at,
                email_hash, lifecycle_status, notes, archived_at, stripe_customer_id)
            SELECT %s, 'c' || i || '@bench.example', 'c' || i || '@bench.example',
                CASE WHEN i %% 3 = 0 THEN '' ELSE 'Contact ' || i END, '', '', 'Company ' || (i %% 1000),
                jsonb_build_object('language', CASE WHEN i %% 2 = 0 THEN 'en' ELSE 'fr' END, 'plan', 'pro'),
                'api', 'subscribed', md5(i::text || random()::text) || lpad(to_hex(i), 8, '0'), now(), now(),
                -- 64 hex characters like the real keyed hash; the suppression list is empty here
                md5('h' || i) || md5('k' || i), 'lead', '', NULL, ''
            FROM generate_series(1, %s) AS i
            """,
            [workspace.pk, n],
        )
        cursor.execute("ANALYZE contacts_contact")
    return workspace, time.perf_counter() - t0


def make_campaign(workspace: Any, *, name: str, days: list[int]) -> Any:
    from datetime import time as dtime

    from campaigns.models import Campaign, Message

    campaign = Campaign.objects.create(
        workspace=workspace, name=name, contact_filter="language=en", active=True, send_time=dtime(0, 0),
        time_zone="UTC", from_name="Acme", from_email="hello@acme.example",
    )  # fmt: skip
    for day in days:
        Message.objects.create(campaign=campaign, send_day=day, subject=f"Day {day}, {{{{name}}}}", html_body=HTML)
    return campaign


# ---------------------------------------------------------------- tick


def tick_child(campaign_id: int, days_later: int) -> None:
    """Runs in its own process so that its peak RSS is the tick's."""
    setup_django(TICK_QUEUE)
    from django.utils import timezone

    from campaigns import services
    from campaigns.models import Campaign

    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    services.enroll = timed("enroll", services.enroll)
    services.schedule = timed("schedule", services.schedule)
    services.dispatch = timed("dispatch", services.dispatch)
    services.refresh_planner_statistics = timed("analyze", services.refresh_planner_statistics)
    campaign = Campaign.objects.select_related("workspace").get(pk=campaign_id)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    at = timezone.now() + timedelta(days=days_later)
    from django.db import connection

    statements: list[tuple[float, str]] = []

    def log_sql(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append((time.perf_counter() - t, " ".join(sql.split())[:90]))

    t0 = time.perf_counter()
    with connection.execute_wrapper(log_sql):
        report = services.run_campaign(campaign, at=at)
    total = time.perf_counter() - t0
    if os.environ.get("BENCH_SQL"):
        for seconds, sql in sorted(statements, reverse=True)[:8]:
            print(f"      {seconds:7.3f}s {sql}", file=sys.stderr)
    assert report is not None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"enrolled": report.enrolled, "due": report.due, "queued": report.queued, "total_s": total}
    result["tick_s"] = total - timings.get("dispatch", 0.0)
    result.update({f"{k}_s": v for k, v in timings.items()})
    result.update(base_rss_mb=base_rss / 1024, peak_rss_mb=peak_rss / 1024)
    print(json.dumps(result))


def run_tick(campaign_id: int, days_later: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_tick", str(campaign_id), str(days_later)],
        cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ},
    )  # fmt: skip
    if out.returncode:
        raise SystemExit(f"tick failed:\n{out.stdout}\n{out.stderr}")
    if out.stderr.strip():
        print(out.stderr.rstrip())
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).delete(TICK_QUEUE)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_tick(n: int, repeat: int) -> None:
    from campaigns.models import Enrollment

    for attempt in range(1, repeat + 1):
        workspace, gen_s = generate(n, reuse=attempt > 1)
        print(f"\n== tick, N={n:,} contacts (half match language=en), run {attempt}/{repeat}")
        print(f"   generated {n:,} contacts in {gen_s:.1f}s" if gen_s else "   (same contacts as run 1)")
        campaign = make_campaign(workspace, name="Tick bench", days=[0, 2, 5])
        for days_later, label in ((0, "day 0: enroll N/2 + schedule N/2"), (2, "day 2: schedule N/2 more")):
            r = run_tick(campaign.pk, days_later)
            print(
                f"   {label}: enrolled {r['enrolled']:,} due {r['due']:,} | enroll {r.get('enroll_s', 0):.2f}s "
                f"schedule {r.get('schedule_s', 0):.2f}s analyze {r.get('analyze_s', 0):.2f}s "
                f"=> tick {r['tick_s']:.2f}s | dispatch {r['queued']:,} in {r.get('dispatch_s', 0):.2f}s "
                f"| total {r['total_s']:.2f}s | peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(after setup {r['base_rss_mb']:.0f} MB)"
            )
        assert Enrollment.objects.filter(campaign=campaign).count() == n // 2


# ---------------------------------------------------------------- send


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_sum = 0
        self.peak_one = 0
        self.procs = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(0.2)

    def sample(self) -> None:
        pids = descendants(self.pid)
        values = [rss_kb(p) for p in pids]
        self.procs = max(self.procs, len(pids))
        self.peak_sum = max(self.peak_sum, sum(v[0] for v in values))
        self.peak_one = max([self.peak_one, *(v[1] for v in values)])  # VmHWM: the kernel's own peak


def prepare_sends(workspace: Any, s: int) -> Any:
    from django.db import connection
    from django.utils import timezone

    from campaigns import services
    from campaigns.models import Campaign

    Campaign.objects.filter(name="Send bench").delete()
    campaign = make_campaign(workspace, name="Send bench", days=[0])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO campaigns_enrollment (campaign_id, contact_id, enrolled_at, enrolled_on) "
            "SELECT %s, id, now(), %s FROM contacts_contact WHERE attributes->>'language' = 'en' ORDER BY id LIMIT %s",
            [campaign.pk, timezone.now().date(), s],
        )
        if cursor.rowcount < s:
            raise SystemExit(f"only {cursor.rowcount} matching contacts for {s} sends: raise --contacts")
    queued = services.schedule(campaign, on=timezone.now().date())
    assert queued == s, queued
    services.refresh_planner_statistics()  # as run_campaign does after a big tick
    return campaign


def bench_send(workspace: Any, s: int, delay_ms: int, args: argparse.Namespace, attempt: int) -> None:
    from django.conf import settings
    from django.db.models import Count

    from campaigns import services
    from campaigns.models import Delivery

    campaign = prepare_sends(workspace, s)
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ses_url = f"http://127.0.0.1:{port}"
    endpoint = start(
        [sys.executable, "tools/ses_endpoint.py", "--port", str(port), "--delay-ms", str(delay_ms), "--keep", "1000"],
        {**os.environ}, logs / "ses.log",
    )  # fmt: skip
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_QUEUE": SEND_QUEUE,
        "REDIS_PREFIX": PREFIX,
        "SES_ENDPOINT_URL": ses_url,
        "SES_BULK": "true",
        "SES_MAX_SEND_RATE": "1000000",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "CONN_MAX_AGE": "600",
        "PYTHONUNBUFFERED": "1",
    }
    worker_cmd = [
        sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", SEND_QUEUE, "-n", f"bench{attempt}@%h",
        "--pool", args.pool, "--concurrency", str(args.concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = start(worker_cmd, env, logs / "worker.log")
    try:
        wait_http(f"{ses_url}/_ses/stats")
        from config.celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[f"bench{attempt}@{socket.gethostname()}"], timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit((logs / "worker.log").read_text()[-3000:])
        sampler = RssSampler(worker.pid)
        sampler.sample()
        idle_sum = sampler.peak_sum
        sampler.start()
        cpu_before = {
            "worker": sum(cpu_seconds(p) for p in descendants(worker.pid)),
            "ses": cpu_seconds(endpoint.pid),
            "bench": time.process_time(),
            "pg": {p: cpu_seconds(p) for p in postgres_backends()},
        }
        t0 = time.perf_counter()
        dispatched = services.dispatch(Delivery.objects.filter(campaign=campaign).queued())
        dispatch_s = time.perf_counter() - t0
        pending = Delivery.objects.filter(campaign=campaign, status__in=["queued", "sending"])
        while pending.exists():
            if time.perf_counter() - t0 > args.timeout:
                raise SystemExit(f"not done after {args.timeout}s: {pending.count()} pending")
            time.sleep(0.1)
        elapsed = time.perf_counter() - t0
        pg_after = {p: cpu_seconds(p) for p in postgres_backends()}
        cpu = {
            "worker": sum(cpu_seconds(p) for p in descendants(worker.pid)) - cpu_before["worker"],
            "postgres": sum(v - cpu_before["pg"].get(p, 0.0) for p, v in pg_after.items()),
            "ses endpoint": cpu_seconds(endpoint.pid) - cpu_before["ses"],
            "bench (dispatch, polling)": time.process_time() - cpu_before["bench"],
        }
        sampler.running = False
        sampler.join()
        counts = dict(
            Delivery.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("id")).order_by()
        )
        stats = json.loads(urllib.request.urlopen(f"{ses_url}/_ses/stats").read())
        load = Path("/proc/loadavg").read_text().split()[0]
        total_cpu = sum(cpu.values())
        cpu_text = ", ".join(f"{k} {v:.1f}s" for k, v in cpu.items())
        print(
            f"   SES delay {delay_ms} ms, run {attempt}: {s:,} deliveries in {elapsed:.2f}s => "
            f"{s / elapsed:,.0f} emails/s | dispatch {dispatched:,} ids in {dispatch_s:.2f}s | "
            f"statuses {counts} | SES calls {stats['by_operation']} accepted {stats['accepted']:,} | "
            f"worker RSS peak sum {sampler.peak_sum / 1024:.0f} MB over {sampler.procs} processes "
            f"(idle {idle_sum / 1024:.0f} MB), largest process {sampler.peak_one / 1024:.0f} MB | load {load}\n"
            f"     CPU {total_cpu:.1f}s = {total_cpu / s * 1e6:.0f} us/email ({cpu_text}); "
            f"on 2 idle cores that is {2 * s / total_cpu:,.0f} emails/s"
        )
        assert counts == {"sent": s}, counts
        assert stats["accepted"] == s, stats
    finally:
        stop(worker)
        stop(endpoint)
        import redis
        from django.conf import settings

        redis.Redis.from_url(settings.REDIS_URL).delete(SEND_QUEUE)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_tick":
        tick_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", default="100000,1000000", help="comma-separated N (default 100000,1000000)")
    parser.add_argument("--sends", default="", help="comma-separated S per N (default min(N/2, 50000|200000))")
    parser.add_argument("--delays", default="0,50", help="SES endpoint latencies in ms (default 0,50)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (default 2)")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-tick", action="store_true")
    parser.add_argument("--no-send", action="store_true")
    args = parser.parse_args()
    create_database()
    setup_django(SEND_QUEUE)
    contacts = [int(x) for x in args.contacts.split(",")]
    if args.sends:
        sends = [int(x) for x in args.sends.split(",")]
    else:
        sends = [min(n // 2, 100_000 if n >= 1_000_000 else 50_000) for n in contacts]
    print(f"machine: {os.cpu_count()} cores; load average {Path('/proc/loadavg').read_text().split()[:3]}")
    for n, s in zip(contacts, sends, strict=True):
        if not args.no_tick:
            bench_tick(n, args.repeat)
        if args.no_send:
            continue
        from crm.models import Workspace

        if args.no_tick:
            generate(n)
        workspace = Workspace.objects.get(slug="bench")
        print(f"\n== send, N={n:,} contacts, S={s:,} deliveries, {args.pool} x {args.concurrency}, SES_BULK")
        for delay in [int(x) for x in args.delays.split(",")]:
            for attempt in range(1, args.repeat + 1):
                bench_send(workspace, s, delay, args, attempt)


if __name__ == "__main__":
    main()
