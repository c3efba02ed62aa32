"""Hostile input on the public endpoints (no API key): the unsubscribe pages, the SES and Stripe
webhooks and website form intake. Huge bodies, bad encodings, wrong content types, SQL and JSON
injection strings, absurd tokens and paths: never a 500, nothing stored.

The API endpoints get the same treatment from schemathesis (tests/test_openapi_all.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from campaigns.models import SesEvent
from contacts.models import Contact
from contacts.suppression import Suppression
from crm.models import Activity, Consent, FormSubmission, Payment, StripeEvent, Workspace
from tests.factories import ContactFactory, FormFactory

pytestmark = pytest.mark.django_db

FIVE_MB = 5 * 1024 * 1024
INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE contacts_contact; --",
    '" OR ""="',
    "1; SELECT pg_sleep(10)--",
    "%' AND 1=0 UNION SELECT NULL--",
    "\x00",
    "{{7*7}}${7*7}<script>alert(1)</script>",
    "../../../../etc/passwd",
]
# (content type, body): what a scanner, a broken client or an attacker sends.
BODIES: list[tuple[str, bytes]] = [
    ("application/json", b"\xff\xfe\xfd invalid utf-8 \xc3\x28"),
    ("application/json", b'{"Type": "Notification", "Message": "\xff\xfe"}'),
    ("application/json", b"[" * 100_000),  # nesting bomb
    ("application/json", b'{"a": ' * 50_000 + b"1" + b"}" * 50_000),
    ("application/json", b'{"Type": "Notification", "MessageId": 1e999999, "Message": NaN}'),
    ("application/json", b'{"__proto__": {"admin": true}, "constructor": {"prototype": {}}}'),
    ("application/json", b'{"Type": "SubscriptionConfirmation", "SubscribeURL": "http://169.254.169.254/"}'),
    ("application/json", b'{"Type": "Notification", "Type": "SubscriptionConfirmation"}'),
    ("application/json", b""),
    ("text/plain", b"List-Unsubscribe=One-Click' OR 1=1 --"),
    ("application/xml", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'),
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=%ff%fe&List-Unsubscribe=One-Click%00"),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=v" % i for i in range(5000))),  # too many fields
    ("application/x-www-form-urlencoded; charset=utf-7", b"List-Unsubscribe=+AE8-ne-Click"),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\r\n\r\n--xy"),
    ("multipart/form-data", b"no boundary at all"),
    ("multipart/form-data; boundary=" + "b" * 5000, b"--"),
    *[("application/x-www-form-urlencoded", f"List-Unsubscribe={quote(s)}".encode()) for s in INJECTIONS],
    *[("application/json", f'{{"Type": "{s}", "MessageId": "{s}"}}'.encode(errors="replace")) for s in INJECTIONS],
]
HUGE_TYPES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", ""]


def stored() -> dict[str, Any]:
    """Everything a public endpoint could write."""
    return {
        "contacts": sorted(Contact.objects.values_list("email", "status")),
        "suppressions": Suppression.objects.count(),
        "ses_events": SesEvent.objects.count(),
        "stripe_events": StripeEvent.objects.count(),
        "payments": Payment.objects.count(),
        "activities": Activity.objects.count(),
        "form_submissions": FormSubmission.objects.count(),
        "consents": Consent.objects.count(),
    }


@pytest.fixture
def ana(workspace: Workspace) -> Contact:
    workspace.stripe_webhook_secret = "whsec_test_acme"
    workspace.save()
    return ContactFactory(workspace=workspace, email="ana@example.com")


@pytest.fixture
def endpoints(ana: Contact) -> list[str]:
    form = FormFactory(workspace=ana.workspace)
    return [
        f"/u/{ana.unsubscribe_token}/",
        "/webhooks/ses/",
        "/webhooks/stripe/",
        "/webhooks/stripe/acme/",
        f"/f/{form.key}/",
    ]


@pytest.fixture
def client() -> Client:
    # As a browser-less attacker: no CSRF exemption (the default test client skips the check).
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def raw_post(client: Client, django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    def _post(path: str, body: bytes, content_type: str, **headers: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            # The Origin a website form would send, so intake gets as far as reading the body.
            headers.setdefault("HTTP_ORIGIN", "https://www.acme.example")
            return client.generic("POST", path, body, content_type=content_type, **headers)

    return _post


@pytest.mark.parametrize(("content_type", "body"), BODIES, ids=[f"body{i}" for i in range(len(BODIES))])
def test_a_hostile_body_is_never_a_500_and_stores_nothing(
    endpoints: list[str], raw_post: Callable[..., Any], content_type: str, body: bytes
) -> None:
    before = stored()
    for path in endpoints:
        response = raw_post(path, body, content_type, HTTP_STRIPE_SIGNATURE="t=1,v1=" + "0" * 64)

        assert response.status_code < 500, (path, response.status_code, response.content[:300])
        assert 400 <= response.status_code < 500, (path, response.status_code)
    assert stored() == before


@pytest.mark.parametrize("content_type", HUGE_TYPES)
def test_a_body_over_5_mb_is_refused_cleanly(
    endpoints: list[str], raw_post: Callable[..., Any], content_type: str
) -> None:
    before = stored()
    body = b"List-Unsubscribe=One-Click&" + b"x" * (FIVE_MB + 1)
    for path in endpoints:
        response = raw_post(path, body, content_type)

        assert response.status_code in (400, 413), (path, response.status_code, response.content[:300])
    assert stored() == before


def test_a_lying_content_length_is_never_a_500(endpoints: list[str], client: Client) -> None:
    before = stored()
    for path in endpoints:
        # Non-numeric or negative lengths never reach Django: gunicorn answers 400 itself.
        for length in ("0", "3", str(10**12)):
            response = client.generic(
                "POST", path, b'{"Type": "Notification"}', content_type="application/json", CONTENT_LENGTH=length
            )
            assert response.status_code < 500, (path, length, response.status_code)
    assert stored() == before


TOKENS = [
    "x" * 10_000,
    "A" * 65,
    "A" * 15,
    *INJECTIONS,
    "%00%00",
    "é" * 100,
    "..",
    "\u202e" * 20,
    "a/b/c/d/e",
]


@pytest.mark.parametrize("token", TOKENS, ids=[f"token{i}" for i in range(len(TOKENS))])
def test_a_hostile_unsubscribe_token_is_a_404_for_every_method(
    ana: Contact, client: Client, raw_post: Callable[..., Any], token: str
) -> None:
    before = stored()
    path = f"/u/{quote(token, safe='/')}/"

    assert client.get(path).status_code == 404
    assert client.head(path).status_code == 404
    assert raw_post(path, b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded").status_code == 404
    assert stored() == before


@pytest.mark.parametrize(
    "path",
    [
        "/" + "a" * 100_000,
        "/u/" + "%ff" * 1000 + "/",
        "/webhooks/ses/" + "x" * 10_000,
        "/webhooks/stripe/" + "a" * 5000 + "/",
        "/webhooks/stripe/%00/",
        "/webhooks/stripe/' OR 1=1 --/",
        "/f/" + "k" * 10_000 + "/",
        "/f/' OR 1=1 --/",
        "/f/%00/",
        "/healthz/" + "%2e%2e/" * 100,
    ],
    ids=lambda p: p[:30],
)
def test_absurd_paths_are_never_a_500(client: Client, path: str) -> None:
    before = stored()
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS"):
        response = client.generic(method, quote(path, safe="/%"), b"{}", content_type="application/json")
        assert response.status_code < 500, (method, path[:50], response.status_code)
    assert stored() == before


def test_a_huge_stripe_signature_header_is_refused(ana: Contact, raw_post: Callable[..., Any]) -> None:
    response = raw_post(
        "/webhooks/stripe/acme/", b'{"id": "evt_1"}', "application/json", HTTP_STRIPE_SIGNATURE="v1=" + "a" * 100_000
    )

    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


def test_the_one_click_body_with_injection_after_it_does_not_unsubscribe(
    ana: Contact, raw_post: Callable[..., Any]
) -> None:
    response = raw_post(
        f"/u/{ana.unsubscribe_token}/",
        b"List-Unsubscribe=One-Click'; UPDATE contacts_contact SET status='unsubscribed'; --",
        "application/x-www-form-urlencoded",
    )

    assert response.status_code == 403
    assert Contact.objects.filter(status=Contact.Status.UNSUBSCRIBED).count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/contacts/?email=%00",
        "/api/v1/contacts/?source=a%00b",
        "/api/v1/contacts/?search=%00",
        "/api/v1/contacts/?status=%00",
        "/api/v1/contacts/?cursor=%00",
        "/api/v1/contacts/%00/",
        "/api/v1/contacts/ana%00@example.com/",
        "/api/v1/campaigns/?active=%00",
        "/api/v1/campaigns/%00/",
        "/api/v1/contacts/export.csv?source=%00",
    ],
)
def test_a_nul_byte_in_an_api_query_or_path_is_never_a_500(api: Any, path: str) -> None:
    # PostgreSQL refuses NUL in text: a query built from it must be refused before it is run.
    response = api.get(path)

    assert response.status_code < 500, (path, response.status_code)
