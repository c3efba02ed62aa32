"""Contact API benchmark (not a test): prints latency and throughput figures.

    .venv/bin/python bench/api.py [--contacts 100000] [--requests 3000] [--batches 30]

On PostgreSQL database `trickle_bench` (created and migrated here; BENCH_DATABASE_URL overrides),
seeded with --contacts existing contacts, against a real gunicorn process on 127.0.0.1:
- single upsert (POST /api/v1/contacts/, half new emails, half existing ones with an attribute
  change) p50/p99 latency with 1 and with 32 concurrent keep-alive clients;
- batch upsert (POST /api/v1/contacts/batch/, 1,000 items, half new, half existing) throughput
  in contacts/s from one client.
Every request count is bounded; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# Not a special-use name such as .test, which email validation rightly refuses.
DOMAIN = "trickle-bench.com"
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/trickle_bench"
TARGET_P99_MS = 50.0
TARGET_BATCH_PER_S = 10_000.0


def setup_database(url: str) -> None:
    """Create the database if needed, then configure Django on it and migrate."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def seed(n: int) -> tuple[str, list[str]]:
    """Exactly `n` contacts in the bench workspace (earlier runs' additions removed); a fresh key."""
    from contacts.models import Contact
    from crm.models import ApiKey, Workspace

    workspace, _ = Workspace.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    seeds = {f"seed{i}@{DOMAIN}" for i in range(n)}
    contacts = Contact.objects.filter(workspace=workspace)
    # Earlier runs' additions go; seeds they updated stay (email_key: an upsert may have re-cased the email).
    contacts.exclude(email_key__in=seeds).delete()
    missing = sorted(seeds - set(contacts.values_list("email_key", flat=True)))
    for low in range(0, len(missing), 5000):
        rows = []
        for email in missing[low : low + 5000]:
            i = int(email[4:].split("@")[0])
            contact = Contact(
                workspace=workspace,
                email=email,
                name=f"Seed {i}",
                phone=f"+35679{i:06d}" if i < 10_000 else "",
                attributes={"language": random.choice(["en", "mt", "it"]), "plan": "free", "n": i},
            )
            contact.refresh_keys()
            rows.append(contact)
        Contact.objects.bulk_create(rows)
    ApiKey.objects.filter(workspace=workspace).delete()
    _, secret = ApiKey.issue(workspace=workspace, name="bench")
    # A table in service has planner statistics (autovacuum keeps them); one just re-seeded, with
    # the last run's rows deleted, has stale ones, and PostgreSQL then scans the whole workspace
    # for a lookup by email (measured 61 ms instead of 14 ms for a 1,000-email batch read).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE contacts_contact")
    emails = list(Contact.objects.filter(workspace=workspace).values_list("email", flat=True))
    return secret, emails


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int, workers: int, threads: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1",
        "API_RATE_LIMIT": "10000000/min",
        "LOG_LEVEL": "ERROR",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--keep-alive",
        "30",
        "--backlog",
        "256",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=BASE_DIR, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise SystemExit("gunicorn did not start within 30 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost far less than the server."""

    def __init__(self, port: int, secret: str) -> None:
        self.port = port
        self.head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
            self.writer = None
        return status, payload


async def single_upserts(port: int, secret: str, emails: list[str], clients: int, total: int) -> list[float]:
    """`total` upserts spread over `clients` concurrent connections; returns latencies in ms."""
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    counter = iter(range(total))
    failures: list[tuple[int, bytes]] = []

    async def client() -> None:
        conn = Connection(port, secret)
        for n in counter:
            if n % 2:
                data = {"email": random.choice(emails).upper(), "attributes": {"plan": random.choice(["pro", "team"])}}
            else:
                data = {"email": f"single-{run}-{n}@{DOMAIN}", "name": "New", "attributes": {"language": "en"}}
            body = json.dumps(data).encode()
            started = time.perf_counter()
            status, payload = await conn.post("/api/v1/contacts/", body)
            latencies.append((time.perf_counter() - started) * 1000)
            if status not in (200, 201):
                failures.append((status, payload[:200]))

    await asyncio.gather(*(client() for _ in range(clients)))
    if failures:
        raise SystemExit(f"{len(failures)} upserts failed, e.g. {failures[0]}")
    return latencies


async def batch_upserts(
    port: int, secret: str, emails: list[str], batches: int, clients: int
) -> tuple[int, float, list[float]]:
    """`batches` batch upserts sent by `clients` concurrent connections (each sample of existing
    emails is disjoint from the others', so concurrent batches do not wait on each other's rows)."""
    run = uuid.uuid4().hex[:8]
    sample = random.sample(emails, 500 * batches)
    bodies = []
    for b in range(batches):
        items = [
            {"email": f"batch-{run}-{b}-{i}@{DOMAIN}", "name": f"B {i}", "attributes": {"n": i}} for i in range(500)
        ]
        items += [{"email": email, "attributes": {"plan": "pro", "b": b}} for email in sample[b * 500 : (b + 1) * 500]]
        random.shuffle(items)
        bodies.append(json.dumps({"contacts": items}).encode())
    times: list[float] = []
    queue = iter(bodies)

    async def client() -> None:
        conn = Connection(port, secret)
        for body in queue:
            t0 = time.perf_counter()
            status, payload = await conn.post("/api/v1/contacts/batch/", body)
            times.append((time.perf_counter() - t0) * 1000)
            result = json.loads(payload)
            if status != 200 or result["errors"]:
                raise SystemExit(f"batch failed: {status} {payload[:300]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return batches * 1000, time.perf_counter() - started, times


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(child) for child in (task / "children").read_text().split()]
    return out


def cpu_snapshot(server: subprocess.Popen[bytes], url: str) -> dict[str, float]:
    """CPU seconds used so far by the gunicorn processes and by this database's PostgreSQL
    backends, per process: the cost of the code, whatever else is loading the machine."""
    import psycopg

    app = {f"app{pid}": _cpu_seconds(pid) for pid in [server.pid, *_children(server.pid)]}
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        pids = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [name])]
    return {**app, **{f"db{pid}": _cpu_seconds(pid) for pid in pids}}


def cpu_used(before: dict[str, float], after: dict[str, float]) -> tuple[float, float]:
    app = sum(value - before.get(key, 0.0) for key, value in after.items() if key.startswith("app"))
    db = sum(value - before.get(key, 0.0) for key, value in after.items() if key.startswith("db"))
    return app, db


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return (
        f"{os.cpu_count()} cores {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000, help="single upserts per concurrency level")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", 4)))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 8)))
    args = parser.parse_args()
    # Stopped from outside: still run the `finally` that stops gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)

    print(f"machine: {machine()}; load average before: {load()}")
    setup_database(url)
    t0 = time.perf_counter()
    secret, emails = seed(args.contacts)
    print(
        f"database: {url} with {len(emails):,} contacts in the workspace (seeded in {time.perf_counter() - t0:.1f} s)"
    )
    port = free_port()
    server = start_server(url, port, args.workers, args.threads)
    print(f"server: gunicorn, {args.workers} workers x {args.threads} threads (gthread), 127.0.0.1:{port}")
    try:
        asyncio.run(single_upserts(port, secret, emails, clients=32, total=400))  # warm every worker and connection
        for clients in (1, 32):
            total = args.requests if clients > 1 else max(300, args.requests // 4)
            cpu_before = cpu_snapshot(server, url)
            started = time.perf_counter()
            latencies = asyncio.run(single_upserts(port, secret, emails, clients=clients, total=total))
            elapsed = time.perf_counter() - started
            app_cpu, db_cpu = cpu_used(cpu_before, cpu_snapshot(server, url))
            p99 = percentile(latencies, 99)
            verdict = (
                ""
                if clients == 1
                else f"  target p99 <= {TARGET_P99_MS:.0f} ms: {'met' if p99 <= TARGET_P99_MS else 'MISSED'}"
            )
            print(
                f"single upsert, {clients:>2} client(s): N={total} p50={percentile(latencies, 50):.1f} ms "
                f"p99={p99:.1f} ms max={max(latencies):.1f} ms ({total / elapsed:.0f} req/s){verdict}\n"
                f"    CPU per request: gunicorn {app_cpu / total * 1000:.2f} ms"
                f" + PostgreSQL {db_cpu / total * 1000:.2f} ms"
            )
        for clients in (1, 2):
            cpu_before = cpu_snapshot(server, url)
            count, seconds, times = asyncio.run(batch_upserts(port, secret, emails, args.batches, clients))
            app_cpu, db_cpu = cpu_used(cpu_before, cpu_snapshot(server, url))
            rate = count / seconds
            print(
                f"batch upsert, {clients} client(s): N={args.batches} batches x 1,000 (half new, half existing): "
                f"{rate:,.0f} contacts/s, per batch p50={statistics.median(times):.0f} ms max={max(times):.0f} ms  "
                f"target >= {TARGET_BATCH_PER_S:,.0f}/s: {'met' if rate >= TARGET_BATCH_PER_S else 'MISSED'}\n"
                f"    CPU per 1,000 contacts: gunicorn {app_cpu / count * 1e6:.0f} ms"
                f" + PostgreSQL {db_cpu / count * 1e6:.0f} ms"
            )
    finally:
        stop_server(server)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
