from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from campaigns.models import Delivery
from contacts.models import Contact
from crm.models import Activity, Workspace
from crm.services import TIMELINE_PAGE_SIZE, add_interaction, change_status, timeline_page
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    MembershipFactory,
    MessageFactory,
    PaymentFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def delivery(contact: Contact, *, status: str, at: datetime, subject: str = "Welcome") -> Delivery:
    message = MessageFactory(campaign=CampaignFactory(workspace=contact.workspace), subject=subject)
    return Delivery.objects.create(
        campaign=message.campaign, message=message, contact=contact, to_email=contact.email, status=status, sent_at=at
    )


def test_the_timeline_merges_activities_payments_and_emails_newest_first(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    add_interaction(contact=contact, kind=Activity.Kind.CALL, text="Intro call", actor="ana", occurred_at=T0)
    delivery(contact, status="sent", at=T0 + timedelta(days=1), subject="Your proposal")
    PaymentFactory(contact=contact, amount=Decimal("1500.50"), kind="deposit", paid_at=T0 + timedelta(days=2))
    delivery(contact, status="failed", at=T0 + timedelta(days=3), subject="Invoice")
    other = ContactFactory(workspace=workspace)
    add_interaction(contact=other, kind=Activity.Kind.NOTE, text="Not this contact", actor="ana", occurred_at=T0)

    entries = list(timeline_page(contact=contact))

    assert [entry.kind for entry in entries] == ["Email failed", "Payment", "Email sent", "Call"]
    assert entries[1].summary == "1,500.50 EUR deposit"
    assert "Your proposal" in entries[2].summary
    assert entries[3].summary == "Intro call" and entries[3].actor == "ana"


def test_the_timeline_is_paginated(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    for day in range(TIMELINE_PAGE_SIZE + 3):
        add_interaction(
            contact=contact, kind="note", text=f"note {day}", actor="t", occurred_at=T0 + timedelta(days=day)
        )

    first, last = timeline_page(contact=contact, page=1), timeline_page(contact=contact, page=2)

    assert first.paginator.count == TIMELINE_PAGE_SIZE + 3
    assert first.object_list[0].summary == f"note {TIMELINE_PAGE_SIZE + 2}"
    assert [entry.summary for entry in last] == ["note 2", "note 1", "note 0"]
    assert timeline_page(contact=contact, page="nonsense").number == 1


@pytest.fixture
def staff_client(client: Client, workspace: Workspace) -> tuple[Client, Any]:
    user = UserFactory(username="ana")
    MembershipFactory(user=user, workspace=workspace)
    client.force_login(user)
    return client, user


def test_the_contact_page_shows_the_timeline(staff_client: tuple[Client, Any], workspace: Workspace) -> None:
    client, user = staff_client
    contact = ContactFactory(workspace=workspace)
    change_status(contact=contact, to="proposal_sent", actor=user)

    response = client.get(f"/admin/contacts/contact/{contact.pk}/change/")

    assert response.status_code == 200
    assert "Status: Lead → Proposal sent" in response.content.decode()
    assert response.context["timeline"].paginator.count == 1


def test_a_note_added_on_the_contact_page_gets_the_workspace_and_author(
    staff_client: tuple[Client, Any], workspace: Workspace
) -> None:
    client, _ = staff_client
    contact = ContactFactory(workspace=workspace)
    data = {
        "workspace": workspace.pk,
        "email": contact.email,
        "name": contact.name,
        "lifecycle_status": "lead",
        "attributes": "{}",
        "source": contact.source,
        "status": contact.status,
        "activities-TOTAL_FORMS": "1",
        "activities-INITIAL_FORMS": "0",
        "activities-MIN_NUM_FORMS": "0",
        "activities-MAX_NUM_FORMS": "1000",
        "activities-0-kind": "call",
        "activities-0-summary": "Called about the deposit",
        "activities-0-occurred_at_0": "2026-03-01",
        "activities-0-occurred_at_1": "10:00:00",
    }

    response = client.post(f"/admin/contacts/contact/{contact.pk}/change/", data)

    assert response.status_code == 302, response.content
    call = Activity.objects.get(contact=contact)
    assert (call.kind, call.summary, call.actor, call.workspace) == (
        "call",
        "Called about the deposit",
        "ana",
        workspace,
    )


def test_another_workspaces_contact_page_is_not_shown(
    staff_client: tuple[Client, Any], other_workspace: Workspace
) -> None:
    client, _ = staff_client
    contact = ContactFactory(workspace=other_workspace)
    add_interaction(contact=contact, kind="note", text="secret plans", actor="x")

    response = client.get(f"/admin/contacts/contact/{contact.pk}/change/", follow=True)

    assert "secret plans" not in response.content.decode()
    assert response.status_code in (200, 302, 403, 404)
    assert response.redirect_chain == [] or response.redirect_chain[-1][0] == "/admin/"


def test_the_contact_list_hides_archived_contacts_unless_asked(
    staff_client: tuple[Client, Any], workspace: Workspace
) -> None:
    client, _ = staff_client
    ContactFactory(workspace=workspace, email="live@example.com")
    ContactFactory(workspace=workspace, email="done@example.com").archive()

    default = client.get("/admin/contacts/contact/").content.decode()
    archived = client.get("/admin/contacts/contact/?archived=yes").content.decode()

    assert "live@example.com" in default and "done@example.com" not in default
    assert "done@example.com" in archived and "live@example.com" not in archived


def test_archive_and_unarchive_admin_actions(staff_client: tuple[Client, Any], workspace: Workspace) -> None:
    client, _ = staff_client
    contact = ContactFactory(workspace=workspace)

    client.post("/admin/contacts/contact/", {"action": "archive", "_selected_action": [contact.pk]})
    contact.refresh_from_db()
    assert contact.is_archived

    client.post("/admin/contacts/contact/?archived=yes", {"action": "unarchive", "_selected_action": [contact.pk]})
    contact.refresh_from_db()
    assert not contact.is_archived


def test_the_contact_list_does_not_name_other_workspaces(
    staff_client: tuple[Client, Any], workspace: Workspace, other_workspace: Workspace
) -> None:
    client, _ = staff_client
    ContactFactory(workspace=other_workspace, email="foreign@example.com")
    ContactFactory(workspace=workspace)

    content = client.get("/admin/contacts/contact/").content.decode()

    assert "foreign@example.com" not in content and "Globex" not in content
