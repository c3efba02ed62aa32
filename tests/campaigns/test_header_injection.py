"""Header injection: whatever a contact's name, a campaign's name or sender name, or a subject
template holds (CR, LF, NUL, other control characters), an email gets exactly its own headers.

Sent through the engine to a real SES endpoint over HTTP; the raw MIME it received is parsed.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest

from campaigns.models import Campaign, Delivery
from campaigns.services import send_deliveries
from crm.models import Workspace
from tests.factories import CampaignFactory, ContactFactory, DeliveryFactory, EnrollmentFactory, MessageFactory
from tools.ses_endpoint import parse_raw_email

pytestmark = pytest.mark.django_db

INJECTED = "\r\nBcc: evil@attacker.test\r\nX-Injected: yes\r\n\r\n<p>body</p>"
HOSTILE_NAMES = [
    f"Ana{INJECTED}",
    "Ana\nBcc: evil@attacker.test",
    "Ana\rBcc: evil@attacker.test",
    # No NUL: PostgreSQL cannot store one and the API refuses it (DRF's null-character validator).
    "Ana\x01\x0b\x0c\x1c\x7f\x85\u2028\u2029Bcc: evil@attacker.test",
    "=?utf-8?q?Ana=0D=0ABcc:_evil@attacker.test?=",
]
ONE_EACH = ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Id", "X-Trickle-Delivery")


def hostile_campaign(workspace: Workspace) -> Campaign:
    campaign = CampaignFactory(workspace=workspace, name=f"Welcome{INJECTED}", contact_filter="")
    MessageFactory(campaign=campaign, send_day=0, subject="Hello {{name}}\r\nBcc: evil@attacker.test {{{name}}}")
    return campaign


def queue(campaign: Campaign, names: list[str]) -> list[int]:
    message = campaign.messages.get()
    return [
        DeliveryFactory(
            enrollment=EnrollmentFactory(
                campaign=campaign,
                contact=ContactFactory(workspace=campaign.workspace, email=f"p{i}@example.com", name=name),
            ),
            message=message,
        ).pk
        for i, name in enumerate(names)
    ]


def raw_header_names(raw: str) -> list[str]:
    """Header names as a mail server reads them off the wire: each line of the header block
    either starts a header (`Name:`) or continues the previous one (leading white space)."""
    head = raw.split("\r\n\r\n", 1)[0] if "\r\n\r\n" in raw else raw.split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    # A bare CR inside a header line is a line break to some servers: there must be none.
    assert not any("\r" in line for line in lines), lines
    return [line.split(":", 1)[0].lower() for line in lines if line and not line[0].isspace()]


def assert_only_its_own_headers(email: EmailMessage, raw: str, to: str) -> None:
    names = raw_header_names(raw)
    assert names == [name.lower() for name in email]
    for header in ONE_EACH:
        assert names.count(header.lower()) == 1, (header, names)
    assert "bcc" not in names
    assert "cc" not in names
    assert "x-injected" not in names
    assert email["To"] == to


def test_a_hostile_name_and_subject_never_add_a_header_local_ses(workspace: Workspace, local_ses: Any) -> None:
    campaign = hostile_campaign(workspace)
    ids = queue(campaign, HOSTILE_NAMES)

    report = send_deliveries(delivery_ids=ids)

    assert report.sent == len(HOSTILE_NAMES)
    records = local_ses.messages()
    assert sorted(r["destination"]["to"][0] for r in records) == sorted(
        f"p{i}@example.com" for i in range(len(HOSTILE_NAMES))
    )
    for record in records:
        assert record["destination"]["cc"] == [] and record["destination"]["bcc"] == []
    for record in records:
        email = parse_raw_email(record["raw"])
        assert_only_its_own_headers(email, record["raw"], to=record["destination"]["to"][0])
        assert str(email["Subject"]).startswith("Hello Ana")


def test_a_hostile_name_never_adds_a_header_moto(workspace: Workspace, moto_ses: Any) -> None:
    moto_ses.verify("acme.test")
    campaign = hostile_campaign(workspace)
    ids = queue(campaign, HOSTILE_NAMES[:2])

    send_deliveries(delivery_ids=ids)

    raws = [m["raw_data"] for m in moto_ses._moto_data()["ses"]["RawMessage"]]
    assert len(raws) == 2
    for raw in raws:
        email = parse_raw_email(raw)
        assert_only_its_own_headers(email, raw, to=str(email["To"]))
        assert str(email["To"]) in ("p0@example.com", "p1@example.com")


def test_a_sender_name_with_a_line_break_never_adds_a_header(workspace: Workspace, local_ses: Any) -> None:
    # The API and admin refuse it; a row written some other way must still not inject anything.
    campaign = hostile_campaign(workspace)
    Campaign.objects.filter(pk=campaign.pk).update(from_name="Acme\r\nBcc: evil@attacker.test")
    [pk] = queue(campaign, ["Ana"])

    send_deliveries(delivery_ids=[pk])

    for record in local_ses.messages():
        assert_only_its_own_headers(parse_raw_email(record["raw"]), record["raw"], to="p0@example.com")
        assert record["destination"]["to"] == ["p0@example.com"] and not record["destination"]["bcc"]
    delivery = Delivery.objects.get(pk=pk)
    assert delivery.status == Delivery.Status.SENT, delivery.error
    [email] = local_ses.emails()
    assert email["From"].addresses[0].addr_spec == "hello@acme.test"
    assert email["From"].addresses[0].display_name == "Acme Bcc: evil@attacker.test"


def test_a_sender_name_with_a_comma_stays_one_address(workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace, from_name="Borg, Ltd", from_email="hi@acme.test")

    assert campaign.sender == '"Borg, Ltd" <hi@acme.test>'


def test_bulk_sends_carry_only_their_own_headers_and_recipient(
    workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    settings.SES_BULK = True
    campaign = hostile_campaign(workspace)
    ids = queue(campaign, HOSTILE_NAMES)

    report = send_deliveries(delivery_ids=ids)

    assert report.sent == len(HOSTILE_NAMES)
    for record in local_ses.messages():
        assert len(record["destination"]["to"]) == 1
        assert record["destination"]["cc"] == [] and record["destination"]["bcc"] == []
        names = [name.lower() for name, _ in record["headers"]]
        assert "bcc" not in names and "x-injected" not in names
        for _, value in record["headers"]:
            assert "\r" not in value and "\n" not in value


def test_an_email_that_cannot_be_built_fails_instead_of_being_unknown(workspace: Workspace, local_ses: Any) -> None:
    campaign = hostile_campaign(workspace)
    Campaign.objects.filter(pk=campaign.pk).update(from_email="not an address", from_name="")
    [pk] = queue(campaign, ["Ana"])

    send_deliveries(delivery_ids=[pk])

    assert local_ses.messages() == []
    assert Delivery.objects.get(pk=pk).status == Delivery.Status.FAILED


def test_control_characters_in_a_name_never_reach_the_bulk_template_data(
    workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    settings.SES_BULK = True
    settings.SES_MAX_SEND_RATE = 1000
    campaign = hostile_campaign(workspace)
    [pk] = queue(campaign, ["Ana\r\nBcc: x@evil.test"])

    send_deliveries(delivery_ids=[pk])

    [record] = local_ses.messages()
    assert "\r" not in record["template_data"]["name"] and "\n" not in record["template_data"]["name"]
    assert record["template_data"]["name"].startswith("Ana")
