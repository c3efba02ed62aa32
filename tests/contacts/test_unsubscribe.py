from __future__ import annotations

import hashlib
from typing import Any

import pytest

from campaigns.models import Delivery
from contacts.models import Contact
from contacts.suppression import Suppression, is_suppressed, token_hash
from contacts.unsubscribe import resubscribe, unsubscribe
from crm.models import Activity, Workspace
from tests.factories import ContactFactory, DeliveryFactory, EnrollmentFactory, MessageFactory, PaymentFactory

pytestmark = pytest.mark.django_db


def test_the_token_cannot_be_derived_from_the_email(workspace: Workspace) -> None:
    one = ContactFactory(workspace=workspace, email="ana@example.com")
    token = one.unsubscribe_token
    one.delete()
    two = ContactFactory(workspace=workspace, email="ana@example.com")
    assert two.unsubscribe_token != token
    assert len(token) >= 43  # 256 bits, url-safe base64
    for derived in (
        hashlib.sha256(b"ana@example.com").hexdigest(),
        hashlib.md5(b"ana@example.com").hexdigest(),  # noqa: S324 - checking it is NOT this
        hashlib.sha1(b"ana@example.com").hexdigest(),  # noqa: S324
    ):
        assert derived not in (token, two.unsubscribe_token)
    assert "ana" not in token.lower()


def test_unsubscribing_deletes_the_contact_by_default_and_suppresses_the_address(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@example.com")
    token = contact.unsubscribe_token

    outcome = unsubscribe(contact=contact, source="one-click")

    assert outcome.contact_deleted
    assert not Contact.objects.filter(pk=contact.pk).exists()
    entry = Suppression.objects.get()
    assert entry.reason == Suppression.Reason.UNSUBSCRIBE
    assert entry.source == "one-click"
    assert entry.token_hash == token_hash(token)
    assert is_suppressed(workspace, "ana@example.com")
    activity = Activity.objects.get(kind=Activity.Kind.UNSUBSCRIBED)
    assert activity.contact is None  # the record outlives the contact
    assert activity.data["email_hash"] == entry.email_hash


def test_keep_behaviour_keeps_the_contact_marked_unsubscribed(workspace: Workspace) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    contact = ContactFactory(workspace=workspace)

    outcome = unsubscribe(contact=contact, source="unsubscribe-page")

    contact.refresh_from_db()
    assert not outcome.contact_deleted
    assert contact.status == Contact.Status.UNSUBSCRIBED
    assert Activity.objects.filter(contact=contact, kind=Activity.Kind.UNSUBSCRIBED).count() == 1


def _note(contact: Contact) -> None:
    Activity.objects.create(workspace=contact.workspace, contact=contact, kind=Activity.Kind.NOTE, summary="Met")


def _call(contact: Contact) -> None:
    Activity.objects.create(workspace=contact.workspace, contact=contact, kind=Activity.Kind.CALL, summary="Rang")


def _payment(contact: Contact) -> None:
    PaymentFactory(contact=contact)


@pytest.mark.parametrize("add_record", [_note, _call, _payment])
def test_a_contact_with_business_records_is_never_deleted(workspace: Workspace, add_record: Any) -> None:
    contact = ContactFactory(workspace=workspace)
    add_record(contact)
    assert contact.has_business_records()

    outcome = unsubscribe(contact=contact, source="one-click")

    contact.refresh_from_db()
    assert not outcome.contact_deleted
    assert contact.status == Contact.Status.UNSUBSCRIBED
    assert is_suppressed(workspace, contact.email)


def test_marketing_activity_alone_is_not_a_business_record(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    Activity.objects.create(workspace=workspace, contact=contact, kind=Activity.Kind.EMAIL_EVENT, summary="Opened")
    assert not contact.has_business_records()


def test_queued_deliveries_are_skipped_after_unsubscribe(workspace: Workspace) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    queued = DeliveryFactory(enrollment__campaign__workspace=workspace)
    contact = queued.contact
    sent = DeliveryFactory(
        message=MessageFactory(campaign=queued.campaign, send_day=1),
        enrollment=queued.enrollment,
        status=Delivery.Status.SENT,
        scheduled_on=queued.scheduled_on.replace(year=queued.scheduled_on.year - 1),
    )
    other_campaign = DeliveryFactory(enrollment=EnrollmentFactory(contact=contact, campaign__workspace=workspace))
    bystander = DeliveryFactory(message=queued.message, enrollment__campaign=queued.campaign)

    unsubscribe(contact=contact, source="one-click")

    for delivery in (queued, sent, other_campaign, bystander):
        delivery.refresh_from_db()
    assert queued.status == other_campaign.status == Delivery.Status.SKIPPED
    assert queued.error == "unsubscribed"
    assert sent.status == Delivery.Status.SENT
    assert bystander.status == Delivery.Status.QUEUED


def test_deleting_on_unsubscribe_keeps_the_delivery_ledger(workspace: Workspace) -> None:
    delivery = DeliveryFactory(enrollment__campaign__workspace=workspace)
    unsubscribe(contact=delivery.contact, source="one-click")
    delivery.refresh_from_db()
    assert delivery.contact_id is None
    assert delivery.status == Delivery.Status.SKIPPED
    assert delivery.to_email


def test_unsubscribing_twice_is_harmless(workspace: Workspace) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    contact = ContactFactory(workspace=workspace)

    first = unsubscribe(contact=contact, source="one-click")
    second = unsubscribe(contact=contact, source="one-click")

    assert first.changed and not second.changed
    assert Suppression.objects.count() == 1
    assert Activity.objects.filter(kind=Activity.Kind.UNSUBSCRIBED).count() == 1


def test_resubscribe_lifts_the_suppression_and_records_who(workspace: Workspace) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    contact = ContactFactory(workspace=workspace)
    unsubscribe(contact=contact, source="one-click")

    resubscribe(contact=contact, source="api", actor="api:trk_1234")

    contact.refresh_from_db()
    assert contact.status == Contact.Status.SUBSCRIBED
    assert not is_suppressed(workspace, contact.email)
    assert list(Contact.objects.filter(workspace=workspace).not_suppressed()) == [contact]
    entry = Activity.objects.get(kind=Activity.Kind.RESUBSCRIBED)
    assert entry.contact == contact
    assert entry.actor == "api:trk_1234"
    assert entry.data["source"] == "api"
    assert entry.occurred_at is not None


def test_resubscribing_a_recreated_contact_after_deletion_works(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@example.com")
    unsubscribe(contact=contact, source="one-click")
    again = ContactFactory(workspace=workspace, email="ana@example.com", status=Contact.Status.UNSUBSCRIBED)

    resubscribe(contact=again, source="admin", actor="admin:root")

    again.refresh_from_db()
    assert again.status == Contact.Status.SUBSCRIBED
    assert not is_suppressed(workspace, "ana@example.com")


def test_resubscribing_an_already_subscribed_contact_records_nothing(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    resubscribe(contact=contact, source="api", actor="api:x")
    assert not Activity.objects.exists()


def test_unsubscribing_a_contact_a_racing_request_already_deleted_keeps_it_suppressed(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@example.com")
    stale = Contact.objects.get(pk=contact.pk)
    unsubscribe(contact=contact, source="one-click")

    outcome = unsubscribe(contact=stale, source="unsubscribe-page")

    assert outcome.contact_deleted and not outcome.changed
    assert Suppression.objects.count() == 1


def test_the_link_the_engine_puts_in_emails_reaches_the_unsubscribe_page(workspace: Workspace) -> None:
    from urllib.parse import urlparse

    from django.urls import resolve

    from campaigns.sending import unsubscribe_url
    from contacts.public_views import unsubscribe_page

    contact = ContactFactory(workspace=workspace)
    match = resolve(urlparse(unsubscribe_url(contact.unsubscribe_token)).path)
    assert match.func is unsubscribe_page
    assert match.kwargs == {"token": contact.unsubscribe_token}
