from __future__ import annotations

import pytest
from django.test import Client

from contacts.models import Contact
from contacts.suppression import Suppression, is_suppressed
from contacts.unsubscribe import suppress_address, unsubscribe
from crm.models import Activity, Workspace
from tests.factories import ContactFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(workspace: Workspace) -> Client:
    membership = MembershipFactory(workspace=workspace, user=UserFactory(username="mia"))
    client = Client()
    client.force_login(membership.user)
    return client


def test_the_suppression_list_is_searchable_by_address_and_scoped(
    staff: Client, workspace: Workspace, other_workspace: Workspace
) -> None:
    suppress_address(workspace=workspace, email="ana@example.com", reason="complaint", source="ses")
    suppress_address(workspace=workspace, email="bob@example.com", reason="bounce", source="ses")
    suppress_address(workspace=other_workspace, email="ana@example.com", reason="manual", source="t")
    ana = Suppression.objects.get(workspace=workspace, reason="complaint")

    listing = staff.get("/admin/contacts/suppression/")
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 2  # not the other workspace's entry

    found = staff.get("/admin/contacts/suppression/", {"q": "ANA@example.com "})
    assert [s.pk for s in found.context["cl"].result_list] == [ana.pk]
    by_hash = staff.get("/admin/contacts/suppression/", {"q": ana.email_hash[:10]})
    assert [s.pk for s in by_hash.context["cl"].result_list] == [ana.pk]
    nothing = staff.get("/admin/contacts/suppression/", {"q": "ana"})
    assert nothing.context["cl"].result_count == 0
    # Only hashes are stored, and only hashes are shown.
    assert "ana@example.com" not in found.content.decode()


def test_the_contact_page_shows_the_mailing_history(staff: Client, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@example.com")
    unsubscribe(contact=contact, source="one-click")  # deleted; the history stays by address hash
    again = ContactFactory(workspace=workspace, email="ana@example.com", status=Contact.Status.UNSUBSCRIBED)
    suppress_address(workspace=workspace, email="ana@example.com", reason="bounce", source="ses")

    page = staff.get(f"/admin/contacts/contact/{again.pk}/change/").content.decode()

    assert "Unsubscribed (one-click)" in page
    assert "Address bounced permanently" in page


def test_the_resubscribe_action_lifts_the_suppression(staff: Client, workspace: Workspace) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    contact = ContactFactory(workspace=workspace)
    unsubscribe(contact=contact, source="one-click")

    response = staff.post(
        "/admin/contacts/contact/", {"action": "resubscribe_selected", "_selected_action": [contact.pk]}
    )

    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.status == Contact.Status.SUBSCRIBED
    assert not is_suppressed(workspace, contact.email)
    assert Activity.objects.get(kind=Activity.Kind.RESUBSCRIBED).actor == "admin:mia"


def test_an_address_without_contact_can_be_lifted_from_the_list(staff: Client, workspace: Workspace) -> None:
    entry = suppress_address(workspace=workspace, email="ghost@example.com", reason="manual", source="t")
    response = staff.post("/admin/contacts/suppression/", {"action": "lift_selected", "_selected_action": [entry.pk]})
    assert response.status_code == 302
    assert not Suppression.objects.exists()
    assert Activity.objects.filter(kind=Activity.Kind.RESUBSCRIBED, actor="admin:mia").exists()


def test_suppressions_cannot_be_deleted_or_edited_silently(staff: Client, workspace: Workspace) -> None:
    entry = suppress_address(workspace=workspace, email="ghost@example.com", reason="manual", source="t")
    assert staff.post(f"/admin/contacts/suppression/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff.get("/admin/contacts/suppression/add/").status_code == 403
    assert Suppression.objects.filter(pk=entry.pk).exists()
