"""Fail fast, in one line each, when a service Trickle needs is not reachable."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

START = {
    "redis": (
        "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
        "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
}


def reachable(url: str, default_port: int) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    ok = True
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if not reachable(redis_url, 6379):
        print(f"Redis is not reachable at {redis_url}; start it with: {START['redis']}", file=sys.stderr)
        ok = False
    if "--postgres" in sys.argv:
        pg_url = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/trickle")
        if not reachable(pg_url, 5432):
            print(f"PostgreSQL is not reachable at {pg_url}; start it with: {START['postgres']}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
