"""The moto_ses fixture: Django + anymail send to a moto server over HTTP, and we read back what it got."""

from __future__ import annotations

from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from django.core.mail import EmailMessage, EmailMultiAlternatives

from tests.ses import MotoSes

UNSUBSCRIBE_URL = "https://trickle.example.com/u/" + "t0k3n" * 16 + "/"
LIST_HEADERS = {
    "List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "List-Id": "Welcome drip <welcome.acme.trickle.example.com>",
}


def test_a_raw_send_through_anymail_reaches_moto_with_the_list_headers_whole(moto_ses: MotoSes) -> None:
    message = EmailMultiAlternatives(
        "Welcome", "Hello Ann", "Acme <drip@example.com>", ["Ann <ann@example.com>"], headers=LIST_HEADERS
    )
    message.attach_alternative("<p>Hello Ann</p>", "text/html")

    assert message.send() == 1

    [email] = moto_ses.emails()
    for name, value in LIST_HEADERS.items():
        # Django folds a header too long for one line before its value, leaving a leading space.
        assert [v.strip() for v in email.get_all(name)] == [value]
    assert (email["Subject"], email["To"], email["From"]) == (
        "Welcome",
        "Ann <ann@example.com>",
        "Acme <drip@example.com>",
    )
    assert email.get_body(preferencelist=("html",)).get_content().strip() == "<p>Hello Ann</p>"
    assert message.anymail_status.recipients["ann@example.com"].status == "queued"
    assert message.anymail_status.message_id


def test_the_default_sender_is_verified(moto_ses: MotoSes, settings: Any) -> None:
    EmailMessage("Hi", "x", None, ["ann@example.com"]).send()

    assert [email["From"] for email in moto_ses.emails()] == [settings.DEFAULT_FROM_EMAIL]


def test_moto_refuses_an_unverified_sender(moto_ses: MotoSes) -> None:
    with pytest.raises(AnymailAPIError, match="Did not have authority"):
        EmailMessage("Hi", "x", "someone@unverified.test", ["ann@example.com"]).send()

    assert moto_ses.emails() == []


def test_each_test_starts_with_an_empty_moto(moto_ses: MotoSes) -> None:
    assert moto_ses.emails() == []
    EmailMessage("Hi", "x", "drip@example.com", ["ann@example.com"]).send()
    assert len(moto_ses.emails()) == 1


def test_a_simple_send_comes_back_without_its_custom_headers(moto_ses: MotoSes) -> None:
    moto_ses.client().send_email(
        FromEmailAddress="drip@example.com",
        Destination={"ToAddresses": ["ann@example.com"]},
        Content={
            "Simple": {
                "Subject": {"Data": "Hi"},
                "Body": {"Text": {"Data": "plain"}},
                "Headers": [{"Name": "List-Id", "Value": "x.example.com"}],
            }
        },
    )

    [email] = moto_ses.emails()
    assert (email["Subject"], email["To"], email.get_content().strip()) == ("Hi", "ann@example.com", "plain")
    assert email["List-Id"] is None  # moto drops them: use Raw (what anymail sends) to test headers
