"""Sending: at most once per delivery, suppression re-checked, SES answers mapped to outcomes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns.models import Campaign, Delivery
from campaigns.services import mark_abandoned, send_deliveries, send_test
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import CampaignFactory, ContactFactory, DeliveryFactory, EnrollmentFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(workspace: Workspace) -> Campaign:
    campaign = CampaignFactory(workspace=workspace, name="Welcome", contact_filter="language=en")
    MessageFactory(
        campaign=campaign,
        send_day=0,
        subject="Welcome {{#if name}}{{name}}{{else}}there{{/if}}",
        html_body="<p>Hi {{#if name}}{{name}}{{else}}there{{/if}} from {{company}}</p>",
    )
    return campaign


def queue_for(campaign: Campaign, *contacts: Contact) -> list[int]:
    message = campaign.messages.get()
    return [
        DeliveryFactory(enrollment=EnrollmentFactory(campaign=campaign, contact=c), message=message).pk
        for c in contacts
    ]


def statuses(ids: list[int]) -> list[str]:
    return [Delivery.objects.get(pk=pk).status for pk in ids]


def test_it_sends_each_delivery_with_one_click_unsubscribe_headers(
    campaign: Campaign, workspace: Workspace, moto_ses: Any
) -> None:
    moto_ses.verify("acme.test")
    ana = ContactFactory(workspace=workspace, email="ana@example.com", name="Ana", company="Borg & Co")
    [pk] = queue_for(campaign, ana)

    report = send_deliveries(delivery_ids=[pk])

    assert report.sent == 1
    delivery = Delivery.objects.get(pk=pk)
    assert delivery.status == Delivery.Status.SENT
    assert delivery.provider_message_id
    assert delivery.to_email == "ana@example.com"
    [email] = moto_ses.emails()
    assert email["To"] == "ana@example.com"
    assert email["Subject"] == "Welcome Ana"
    assert email["List-Unsubscribe"].strip() == f"<http://testserver/u/{ana.unsubscribe_token}/>"
    assert email["List-Unsubscribe-Post"].strip() == "List-Unsubscribe=One-Click"
    assert email["List-Id"].strip() == f'"Welcome" <campaign-{campaign.pk}.acme.trickle.localhost>'
    html = next(p for p in email.walk() if p.get_content_type() == "text/html").get_content()
    text = next(p for p in email.walk() if p.get_content_type() == "text/plain").get_content()
    assert "Hi Ana from Borg &amp; Co" in html
    assert f'href="http://testserver/u/{ana.unsubscribe_token}/"' in html
    assert f"Unsubscribe: http://testserver/u/{ana.unsubscribe_token}/" in text


def test_a_chunk_handed_out_twice_is_sent_once(campaign: Campaign, workspace: Workspace, moto_ses: Any) -> None:
    moto_ses.verify("acme.test")
    ids = queue_for(campaign, *ContactFactory.create_batch(3, workspace=workspace))

    first = send_deliveries(delivery_ids=ids)
    second = send_deliveries(delivery_ids=ids)

    assert (first.sent, second.claimed, second.sent) == (3, 0, 0)
    assert len(moto_ses.emails()) == 3


def test_it_skips_contacts_who_unsubscribed_or_stopped_matching(
    campaign: Campaign, workspace: Workspace, moto_ses: Any
) -> None:
    moto_ses.verify("acme.test")
    gone = ContactFactory(workspace=workspace)
    moved = ContactFactory(workspace=workspace)
    stays = ContactFactory(workspace=workspace, email="stays@example.com")
    ids = queue_for(campaign, gone, moved, stays)
    gone.status = Contact.Status.UNSUBSCRIBED
    gone.save()
    moved.attributes = {"language": "fr"}
    moved.save()

    send_deliveries(delivery_ids=ids)

    assert statuses(ids) == ["skipped", "skipped", "sent"]
    assert Delivery.objects.get(pk=ids[0]).error == "unsubscribed"
    assert "no longer matches" in Delivery.objects.get(pk=ids[1]).error
    assert [e["To"] for e in moto_ses.emails()] == ["stays@example.com"]


def test_a_deleted_contacts_delivery_is_skipped(campaign: Campaign, workspace: Workspace, moto_ses: Any) -> None:
    contact = ContactFactory(workspace=workspace)
    [pk] = queue_for(campaign, contact)
    Delivery.objects.filter(pk=pk).update(enrollment=None)
    contact.delete()

    send_deliveries(delivery_ids=[pk])

    assert statuses([pk]) == ["skipped"]
    assert moto_ses.emails() == []


def test_throttled_sends_go_back_to_queued_and_are_retried_without_loss(
    campaign: Campaign, workspace: Workspace, local_ses: Any, celery_queue: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ids = queue_for(campaign, *ContactFactory.create_batch(4, workspace=workspace))
    local_ses.configure(throttle_ratio=1.0)

    with django_capture_on_commit_callbacks(execute=True):
        report = send_deliveries(delivery_ids=ids)

    assert report.retried == 4
    assert statuses(ids) == ["queued"] * 4
    assert "TooManyRequests" in Delivery.objects.get(pk=ids[0]).error
    [retry] = celery_queue.drain()
    assert sorted(retry) == sorted(ids)

    local_ses.configure(throttle_ratio=0.0)
    send_deliveries(delivery_ids=retry)

    assert statuses(ids) == ["sent"] * 4
    assert len(local_ses.messages()) == 4


def test_server_errors_are_retried_and_a_delivery_gives_up_after_max_attempts(
    campaign: Campaign, workspace: Workspace, local_ses: Any, celery_queue: Any, settings: Any
) -> None:
    settings.DELIVERY_MAX_ATTEMPTS = 2
    [pk] = queue_for(campaign, ContactFactory(workspace=workspace))
    local_ses.configure(error_ratio=1.0)

    send_deliveries(delivery_ids=[pk])
    assert statuses([pk]) == ["queued"]
    send_deliveries(delivery_ids=[pk])

    delivery = Delivery.objects.get(pk=pk)
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.error.startswith("Gave up after 2 attempts")
    assert local_ses.messages() == []


def test_a_permanent_rejection_fails_only_that_delivery_with_the_reason(
    campaign: Campaign, workspace: Workspace, local_ses: Any
) -> None:
    bad = ContactFactory(workspace=workspace, email="bounce@example.com")
    good = ContactFactory(workspace=workspace, email="good@example.com")
    ids = queue_for(campaign, bad, good)
    local_ses.configure(reject=["bounce@example.com"])

    send_deliveries(delivery_ids=ids)

    assert statuses(ids) == ["failed", "sent"]
    assert "MessageRejected" in Delivery.objects.get(pk=ids[0]).error


def test_a_delivery_abandoned_by_a_killed_worker_becomes_unknown_and_is_never_resent(
    campaign: Campaign, workspace: Workspace, local_ses: Any
) -> None:
    [pk] = queue_for(campaign, ContactFactory(workspace=workspace))
    # A worker claimed it and died before SES answered.
    Delivery.objects.filter(pk=pk).update(
        status=Delivery.Status.SENDING, claim="dead-worker", claimed_at=timezone.now() - timedelta(hours=1)
    )

    assert mark_abandoned(now=timezone.now()) == 1
    report = send_deliveries(delivery_ids=[pk])

    assert report.claimed == 0
    assert statuses([pk]) == ["unknown"]
    assert local_ses.messages() == []


def test_a_timeout_after_the_request_left_is_unknown_not_retried(
    campaign: Campaign, workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    settings.ANYMAIL = {
        **settings.ANYMAIL,
        "AMAZON_SES_CLIENT_PARAMS": {
            **settings.ANYMAIL["AMAZON_SES_CLIENT_PARAMS"],
            "config": {"retries": {"total_max_attempts": 1}, "read_timeout": 0.2},
        },
    }
    settings.SES_ENDPOINT_URL = local_ses.url + "/"  # a fresh client with the short timeout
    [pk] = queue_for(campaign, ContactFactory(workspace=workspace))
    local_ses.configure(delay_ms=1000)

    report = send_deliveries(delivery_ids=[pk])

    assert report.unknown == 1
    assert statuses([pk]) == ["unknown"]


def test_bulk_sends_up_to_50_recipients_a_call_each_with_its_own_headers(
    campaign: Campaign, workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    settings.SES_BULK = True
    settings.SES_MAX_SEND_RATE = 1000
    contacts = [ContactFactory(workspace=workspace, email=f"p{i}@example.com", name=f"P{i}") for i in range(60)]
    ids = queue_for(campaign, *contacts)

    report = send_deliveries(delivery_ids=ids)

    assert report.sent == 60
    records = local_ses.messages()
    assert len(records) == 60
    assert len({r["batch"] for r in records}) == 2
    by_to = {r["destination"]["to"][0]: r for r in records}
    first = by_to["p0@example.com"]
    assert first["template_data"]["name"] == "P0"
    assert first["template_data"]["unsubscribe_url"] == f"http://testserver/u/{contacts[0].unsubscribe_token}/"
    headers = dict(first["headers"])
    assert headers["List-Unsubscribe"] == f"<http://testserver/u/{contacts[0].unsubscribe_token}/>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert set(Delivery.objects.filter(pk__in=ids).values_list("provider_message_id", flat=True)) == {
        r["id"] for r in records
    }


def test_a_test_send_goes_to_the_operator_and_is_not_counted(
    campaign: Campaign, workspace: Workspace, moto_ses: Any, django_capture_on_commit_callbacks: Any
) -> None:
    moto_ses.verify("acme.test")
    sample = ContactFactory(workspace=workspace, name="Ana")

    with django_capture_on_commit_callbacks(execute=True):
        delivery = send_test(message=campaign.messages.get(), to_email="me@example.com", sample=sample)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT and delivery.is_test
    [email] = moto_ses.emails()
    assert email["To"] == "me@example.com"
    assert email["Subject"] == "Welcome Ana"
    assert "test-preview" in email["List-Unsubscribe"]
    assert campaign.deliveries.counted().count() == 0


def test_a_suppressed_address_is_skipped_even_if_its_contact_says_subscribed(
    campaign: Campaign, workspace: Workspace, local_ses: Any
) -> None:
    from contacts.suppression import Suppression, suppression_hash

    contact = ContactFactory(workspace=workspace, email="bounced@example.com")
    [pk] = queue_for(campaign, contact)
    # A bounce arrived for the address; the record itself was never updated.
    Suppression.objects.create(
        workspace=workspace, email_hash=suppression_hash(workspace.pk, "bounced@example.com"), reason="bounce"
    )

    send_deliveries(delivery_ids=[pk])

    delivery = Delivery.objects.get(pk=pk)
    assert (delivery.status, delivery.error) == ("skipped", "suppressed")
    assert local_ses.messages() == []


def test_a_large_chunk_is_claimed_one_ses_call_at_a_time(
    campaign: Campaign, workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    # A worker killed mid-chunk must strand at most one call's worth in `sending`.
    settings.SES_BULK = True
    settings.SES_MAX_SEND_RATE = 1000
    ids = queue_for(campaign, *[ContactFactory(workspace=workspace) for _ in range(120)])

    report = send_deliveries(delivery_ids=ids)

    assert report.claimed == report.sent == 120
    claims = list(Delivery.objects.filter(pk__in=ids).values_list("claim", flat=True))
    assert len(set(claims)) == 3
    assert len(local_ses.messages()) == 120


def test_bulk_formats_the_sender_as_anymail_would(
    campaign: Campaign, workspace: Workspace, local_ses: Any, settings: Any
) -> None:
    from anymail.utils import parse_single_address

    settings.SES_BULK = True
    settings.SES_MAX_SEND_RATE = 1000
    campaign.from_name, campaign.from_email = "Zoë Café", "zoe@acme.test"
    campaign.save()
    [pk] = queue_for(campaign, ContactFactory(workspace=workspace, email="ana@example.com"))

    send_deliveries(delivery_ids=[pk])

    [record] = local_ses.messages()
    expected = parse_single_address("Zoë Café <zoe@acme.test>").format(use_rfc2047=True)
    assert record["from"] == expected
    assert record["from"] != "Zoë Café <zoe@acme.test>"
    assert record["destination"]["to"] == ["ana@example.com"]


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_every_email_carries_the_configured_ses_configuration_set(
    campaign: Campaign, workspace: Workspace, local_ses: Any, settings: Any, bulk: bool
) -> None:
    settings.SES_BULK = bulk
    settings.SES_MAX_SEND_RATE = 1000
    settings.ANYMAIL = {**settings.ANYMAIL, "AMAZON_SES_CONFIGURATION_SET_NAME": "trickle-events"}
    settings.SES_ENDPOINT_URL = local_ses.url + "/"  # a fresh connection that reads the new setting
    ids = queue_for(campaign, *ContactFactory.create_batch(2, workspace=workspace))

    send_deliveries(delivery_ids=ids)

    records = local_ses.messages()
    assert len(records) == 2
    assert {r["configuration_set"] for r in records} == {"trickle-events"}
