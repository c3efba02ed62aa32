"""pytest fixtures that point Django's email backend (django-anymail, SES v2 over boto3) at a real
HTTP SES endpoint: `local_ses` (tools/ses_endpoint.py: SendBulkEmail, templates, fault injection)
and `moto_ses` (moto's server: SendEmail only). Import them into tests/conftest.py with
`from tests.ses import *  # noqa: F403`.

Both override settings through pytest-django's `settings` fixture. anymail reads ANYMAIL when a
backend is constructed, and Django constructs one per `EmailMessage.send()` (the boto3 client is
made in the backend's `open()`), so the override takes effect for every send made in the test.
A connection obtained with `get_connection()` before the fixture ran would keep the old endpoint.

boto3's own retries are switched off (`total_max_attempts: 1`) so that a throttled or failed call
reaches the caller at once and a test sees exactly what the engine's retry logic does with it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tools.ses_endpoint import SesEndpoint, parse_raw_email, start

__all__ = ["local_ses", "moto_server", "moto_ses", "ses_client"]

SES_BACKEND = "anymail.backends.amazon_ses.EmailBackend"  # SES v2 in anymail >= 12
TEST_REGION = "us-east-1"
NO_RETRIES = {"total_max_attempts": 1}


def ses_client(endpoint_url: str, **config: Any) -> Any:
    """A boto3 sesv2 client for `endpoint_url`, without retries unless `retries=` says otherwise."""
    return boto3.session.Session().client(
        "sesv2",
        endpoint_url=endpoint_url,
        region_name=TEST_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**{"retries": NO_RETRIES, **config}),
    )


def _point_django_at(settings: Any, monkeypatch: pytest.MonkeyPatch, endpoint_url: str) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": TEST_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    # A developer's ~/.aws profile must not leak into a test.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings.EMAIL_BACKEND = SES_BACKEND
    settings.SES_ENDPOINT_URL = endpoint_url
    anymail = {key: value for key, value in settings.ANYMAIL.items() if key != "AMAZON_SES_CLIENT_PARAMS"}
    anymail["AMAZON_SES_CLIENT_PARAMS"] = {
        **settings.ANYMAIL.get("AMAZON_SES_CLIENT_PARAMS", {}),
        "endpoint_url": endpoint_url,
        "region_name": TEST_REGION,
        "config": {"retries": NO_RETRIES},
    }
    settings.ANYMAIL = anymail


@pytest.fixture
def local_ses(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SesEndpoint]:
    """Our SES v2 endpoint on a free port, with Django's email going to it; stopped afterwards."""
    endpoint = start()
    _point_django_at(settings, monkeypatch, endpoint.url)
    try:
        yield endpoint
    finally:
        endpoint.stop()


@dataclass
class MotoSes:
    """A reset moto server wired into Django, and what it received."""

    url: str

    def client(self) -> Any:
        return ses_client(self.url)

    def verify(self, identity: str) -> None:
        """moto refuses to send from an address whose address or domain is not a verified identity."""
        self.client().create_email_identity(EmailIdentity=identity)

    def _moto_data(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=10) as response:
            return json.load(response)

    def emails(self) -> list[EmailMessage]:
        """Every email moto accepted, oldest first, as MIME messages with all their headers.

        Raw sends come back whole. moto keeps only subject, body and addresses of a Simple send
        (it drops Simple's custom headers), so those are rebuilt as text messages from that.
        """
        ses = self._moto_data().get("ses", {})
        found: list[tuple[str, EmailMessage]] = []
        for raw in ses.get("RawMessage", []):
            found.append((raw["id"], parse_raw_email(raw["raw_data"])))
        for simple in ses.get("Message", []):
            message = EmailMessage()
            message["From"] = simple["source"]
            for kind in ("To", "Cc", "Bcc"):
                addresses = simple["destinations"].get(f"{kind}Addresses") or []
                if addresses:
                    message[kind] = ", ".join(addresses)
            message["Subject"] = simple["subject"]
            message.set_content(simple["body"])
            found.append((simple["id"], message))
        # moto's message ids are not ordered; its model registry keeps each kind in creation order,
        # which is all a test needs when it sends one kind.
        return [message for _, message in found]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """One in-process moto server per test session (starting one costs about a second)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_ses(moto_server: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> MotoSes:
    """moto, emptied, with the default sender's domain and example.com verified and Django pointed at it."""
    moto = MotoSes(url=moto_server)
    moto.reset()
    _point_django_at(settings, monkeypatch, moto.url)
    sender_domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2]
    for identity in {sender_domain, "example.com"}:
        moto.verify(identity)
    return moto
