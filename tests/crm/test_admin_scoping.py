from __future__ import annotations

import pytest
from django.test import Client

from contacts.models import Contact
from crm.models import Workspace
from tests.factories import ContactFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/contacts/contact/"


@pytest.fixture
def ours(workspace: Workspace) -> Contact:
    return ContactFactory(workspace=workspace, email="ours@acme.test")


@pytest.fixture
def theirs(other_workspace: Workspace) -> Contact:
    return ContactFactory(workspace=other_workspace, email="theirs@globex.test")


@pytest.fixture
def staff_of_a(workspace: Workspace) -> Client:
    membership = MembershipFactory(workspace=workspace, user=UserFactory(username="ana", is_staff=True))
    client = Client()
    client.force_login(membership.user)
    return client


def test_a_staff_member_sees_only_their_workspaces_contacts(staff_of_a: Client, ours: Contact, theirs: Contact) -> None:
    response = staff_of_a.get(CHANGELIST)

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [ours]
    assert b"theirs@globex.test" not in response.content


def test_the_workspace_filter_does_not_list_other_workspaces(
    staff_of_a: Client, ours: Contact, theirs: Contact
) -> None:
    response = staff_of_a.get(CHANGELIST)

    assert b"Globex" not in response.content


def test_a_staff_member_cannot_open_change_or_delete_another_workspaces_contact(
    staff_of_a: Client, ours: Contact, theirs: Contact
) -> None:
    assert staff_of_a.get(f"{CHANGELIST}{ours.pk}/change/").status_code == 200
    for page in ("change", "delete", "history"):
        assert staff_of_a.get(f"{CHANGELIST}{theirs.pk}/{page}/").status_code in (403, 404), page

    response = staff_of_a.post(f"{CHANGELIST}{theirs.pk}/delete/", {"post": "yes"})

    assert response.status_code in (403, 404)
    assert Contact.objects.filter(pk=theirs.pk).exists()


def test_a_staff_member_cannot_bulk_delete_another_workspaces_contact(
    staff_of_a: Client, ours: Contact, theirs: Contact
) -> None:
    staff_of_a.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [theirs.pk, ours.pk], "post": "yes"})

    assert list(Contact.objects.all()) == [theirs]


def test_a_staff_member_without_a_workspace_sees_no_contacts(ours: Contact, theirs: Contact) -> None:
    client = Client()
    client.force_login(UserFactory(username="drifter", is_staff=True))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_a_superuser_sees_and_opens_every_workspaces_contacts(ours: Contact, theirs: Contact) -> None:
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True))

    response = client.get(CHANGELIST)

    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == {ours, theirs}
    assert client.get(f"{CHANGELIST}{theirs.pk}/change/").status_code == 200
