"""Throughput of tools/ses_endpoint.py under boto3 SendBulkEmail from several threads (not a test).

    .venv/bin/python tests/tools/bench_ses_endpoint.py [--seconds 10] [--threads 8] [--delay-ms 0]

The endpoint runs in its own process, as in bench/engine.py, so its CPU time is measured apart
from boto3's (read from `GET /_ses/stats`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_ses/stats") as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tools/ses_endpoint.py"), "--port", str(port), "--delay-ms", str(args.delay_ms)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                stats(url)
                break
            except OSError:
                time.sleep(0.05)
        config = Config(max_pool_connections=args.threads, retries={"total_max_attempts": 1})
        session = boto3.session.Session()
        admin = session.client("sesv2", endpoint_url=url, region_name="us-east-1", config=config)
        admin.create_email_template(
            TemplateName="bench",
            TemplateContent={"Subject": "Hi {{name}}", "Html": "<p>Hello {{name}}</p>", "Text": "Hello {{name}}"},
        )
        entries = [
            {
                "Destination": {"ToAddresses": [f"user{i}@example.com"]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": json.dumps({"name": f"User {i}"})}
                },
                "ReplacementHeaders": [
                    {"Name": "List-Unsubscribe", "Value": f"<https://example.com/u/{i:032d}/>"},
                    {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
                    {"Name": "List-Id", "Value": "bench.example.com"},
                ],
            }
            for i in range(50)
        ]
        deadline = time.monotonic() + args.seconds
        sent = [0] * args.threads

        def worker(n: int) -> None:
            client = session.client("sesv2", endpoint_url=url, region_name="us-east-1", config=config)
            while time.monotonic() < deadline:
                client.send_bulk_email(
                    FromEmailAddress="bench@example.com",
                    DefaultContent={"Template": {"TemplateName": "bench", "TemplateData": "{}"}},
                    BulkEmailEntries=entries,
                )
                sent[n] += 50

        before = stats(url)
        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        after = stats(url)
        emails = sum(sent)
        cpu = after["cpu_seconds"] - before["cpu_seconds"]
        calls = after["calls"] - before["calls"]
        print(
            f"delay={args.delay_ms}ms threads={args.threads}: {emails / elapsed:,.0f} emails/s, "
            f"{calls / elapsed:,.0f} SendBulkEmail calls/s; endpoint CPU {cpu:.2f}s in {elapsed:.1f}s "
            f"({100 * cpu / elapsed:.0f}% of one core, {1000 * cpu / max(calls, 1):.2f} ms/call); "
            f"accepted={after['accepted']}"
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
