"""`manage.py celery_ping` as an orchestrator runs it: a subprocess, against a real worker.

The worker also runs with LOG_FORMAT=json, so the same test shows an operator's view of one task:
JSON lines carrying the task id and the request id of the web request that enqueued it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from campaigns import tasks
from config.observability import bind
from tests.e2e.processes import ROOT, process_env, running, wait_for, worker_args

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def ping(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "celery_ping", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def json_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_it_exits_1_when_no_worker_answers() -> None:
    result = ping(process_env(), "--timeout", "0.5")

    assert result.returncode == 1
    assert "no Celery worker answered within 0.5s" in result.stderr


def test_it_exits_1_when_the_broker_is_unreachable() -> None:
    env = process_env(REDIS_URL="redis://127.0.0.1:1/0", CELERY_BROKER_URL="redis://127.0.0.1:1/0")

    result = ping(env, "--timeout", "0.5")

    assert result.returncode == 1
    assert "broker unreachable" in result.stderr


def test_it_names_the_worker_that_answers_and_the_worker_logs_json_with_task_and_request_ids(
    tmp_path: Path, celery_queue: Any
) -> None:
    env = process_env(LOG_FORMAT="json")
    log = tmp_path / "worker.log"
    with running(worker_args("pingme", concurrency=1), env=env, log=log):
        answered = wait_for(
            lambda: (result := ping(env, "--timeout", "1")).returncode == 0 and result,
            timeout=90,
            what="the worker to answer a ping",
            logs=[log],
        )
        assert "pingme@" in answered.stdout
        assert ": pong" in answered.stdout

        with bind(request_id="req-ping-1"):
            task_id = tasks.send_deliveries.delay([2_000_000_001]).id
        line = wait_for(
            lambda: next(
                (d for d in json_lines(log) if d.get("task_id") == task_id and "claimed" in d["message"]), None
            ),
            timeout=60,
            what="the worker's JSON log line for the task",
            logs=[log],
        )

    assert line["request_id"] == "req-ping-1"
    assert line["delivery_ids"] == [2_000_000_001]
    assert line["logger"] == "campaigns.services"
    assert line["level"] == "INFO"
