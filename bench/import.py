"""Import benchmark: N CSV rows into PostgreSQL through `crm.imports`, rows/s and RSS.

    .venv/bin/python bench/import.py [--rows 1000000] [--chunk-size 5000]

Creates (drops first) the database `trickle_bench_import`, migrates it, writes the CSV under var/
once (reused on later runs), imports it into a fresh workspace, then imports it again (every row
now an existing contact) and prints the figures. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
DB_NAME = "trickle_bench_import"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the PostgreSQL backend process serving our connection."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_csv(path: Path, rows: int, *, seed: int = 6) -> None:
    rng = random.Random(seed)
    plans = ["free", "basic", "pro", "team"]
    cities = ["Valletta", "Sliema", "Mdina", "Gozo", "Birgu"]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write("email,name,phone,company,plan,city\n")
        for i in range(rows):
            # Half the rows carry a phone number, as contact lists from forms usually do.
            phone = f"+3567{i % 10_000_000:07d}" if i % 2 == 0 else ""
            out.write(
                f"person{i}@example{i % 97}.com,Person {i},{phone},Company {(i + seed) % 5000},"
                f"{rng.choice(plans)},{rng.choice(cities)}\n"
            )
    tmp.rename(path)


def create_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=5000)
    args = parser.parse_args()

    sys.path.insert(0, str(BASE))
    os.environ["DATABASE_URL"] = f"{PG}/{DB_NAME}"
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench-only-" + os.urandom(8).hex())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

    (BASE / "var").mkdir(exist_ok=True)
    path = BASE / "var" / f"bench-import-{args.rows}.csv"
    # The same addresses with a different company on every row and other plan/city values.
    changed_path = BASE / "var" / f"bench-import-{args.rows}-changed.csv"
    for target, seed in ((path, 6), (changed_path, 7)):
        if not target.exists():
            started = time.perf_counter()
            write_csv(target, args.rows, seed=seed)
            print(f"wrote {target.name} ({target.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")

    create_database()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from django.db import connection

    from crm.imports import ImportReport, import_contacts

    def backend_cpu() -> dict[int, float]:
        # Every backend on the bench database: the import writes from its own thread and connection.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            pids = [pid for (pid,) in cursor.fetchall()]
        seen = {}
        for pid in pids:
            with contextlib.suppress(OSError):  # the backend just ended
                seen[pid] = backend_cpu_seconds(pid)
        return seen

    from crm.models import Workspace

    workspace = Workspace.objects.create(name="Bench", slug="bench")
    print(f"rows={args.rows} chunk={args.chunk_size} cpus={os.cpu_count()} load={os.getloadavg()}")
    print(f"RSS after setup: {rss_mb():.0f} MB")

    # create: every row new. re-import: the same file again, every row an existing unchanged contact.
    # update: every row an existing contact with changed cells.
    for label, source in (("create", path), ("re-import", path), ("update", changed_path)):
        samples: dict[int, float] = {}
        server_start = backend_cpu()
        server_last: dict[int, float] = dict(server_start)
        marks = sorted({args.rows // 10, args.rows // 2, args.rows})

        def progress(
            report: ImportReport,
            samples: dict[int, float] = samples,
            marks: list[int] = marks,
            server_last: dict[int, float] = server_last,
        ) -> None:
            server_last.update(backend_cpu())
            done = report.created + report.updated + report.unchanged
            for mark in marks:
                if done >= mark and mark not in samples:
                    samples[mark] = rss_mb()

        started = time.perf_counter()
        cpu_started = time.process_time()
        with source.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
            report = import_contacts(
                workspace=workspace, stream=stream, chunk_size=args.chunk_size, on_progress=progress
            )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        # The writer's connection is closed by now: its last sample (one chunk before the end) counts.
        server_last.update(backend_cpu())
        server = sum(seconds - server_start.get(pid, 0.0) for pid, seconds in server_last.items())
        print(f"[{label}] {report.summary()}")
        print(
            f"[{label}] {args.rows / elapsed:,.0f} rows/s wall ({elapsed:.1f}s; this process used {cpu:.1f}s CPU), "
            f"load now {os.getloadavg()[0]:.2f}"
        )
        print(
            f"[{label}] CPU: importer {cpu:.1f}s + PostgreSQL backends {server:.1f}s. Bound on an idle 2-core "
            f"machine (parsing and PostgreSQL overlap): {args.rows / max(cpu, server):,.0f} rows/s; "
            f"if they could not overlap: {args.rows / (cpu + server):,.0f} rows/s"
        )
        print(f"[{label}] RSS at " + ", ".join(f"{n:,} rows: {mb:.0f} MB" for n, mb in samples.items()))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
