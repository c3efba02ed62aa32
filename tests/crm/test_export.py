from __future__ import annotations

import csv
import io
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from contacts.models import Contact
from crm.imports import import_contacts
from crm.models import Workspace
from tests.factories import ContactFactory, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/contacts/export.csv"


def read(response: object) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(body)))


def snapshot(workspace: Workspace) -> set[tuple]:
    return {
        (c.email, c.name, c.phone, c.company, c.source, c.status, tuple(sorted(c.attributes.items())))
        for c in Contact.objects.filter(workspace=workspace)
    }


def test_export_then_import_into_another_workspace_gives_the_same_contacts(
    api: APIClient, workspace: Workspace
) -> None:
    ContactFactory(
        workspace=workspace,
        email="ana@example.com",
        name='Ana, "the" boss',
        phone="+35699123456",
        company="Acme\nLtd",
        source="pricing_wizard",
        attributes={"plan": "pro", "city": "Valletta"},
    )
    ContactFactory(
        workspace=workspace,
        email="bo@example.com",
        name='=HYPERLINK("x")',
        attributes={"email": "alias"},
        status=Contact.Status.UNSUBSCRIBED,
    )
    ContactFactory(workspace=workspace, email="cy@example.com", name="Cy", attributes={})

    response = api.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    copy = WorkspaceFactory(slug="copy")

    report = import_contacts(workspace=copy, stream=io.StringIO(body))

    assert report.error_count == 0 and report.created == 3
    assert snapshot(copy) == snapshot(workspace)


def test_cells_that_spreadsheets_would_run_as_formulas_are_neutralised(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(
        workspace=workspace,
        email="ana@example.com",
        name="=cmd|' /C calc'!A0",
        company="@SUM(1)",
        phone="+35699123456",
        attributes={"note": "-2+3"},
    )

    (row,) = read(api.get(URL))

    assert row["name"] == "'=cmd|' /C calc'!A0"
    assert row["company"] == "'@SUM(1)"
    assert row["phone"] == "'+35699123456"
    assert row["note"] == "'-2+3"


def test_the_list_filters_apply(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(
        workspace=workspace, email="ana@example.com", name="Ana", source="pricing_wizard", attributes={"plan": "pro"}
    )
    ContactFactory(workspace=workspace, email="bo@example.com", name="Bo", source="api", attributes={"plan": "pro"})
    ContactFactory(
        workspace=workspace,
        email="cy@example.com",
        name="Cy",
        source="api",
        attributes={"plan": "free"},
        status=Contact.Status.UNSUBSCRIBED,
    )

    def emails(query: str) -> list[str]:
        return sorted(row["email"] for row in read(api.get(URL + query)))

    assert emails("?source=pricing_wizard") == ["ana@example.com"]
    assert emails("?attributes.plan=pro") == ["ana@example.com", "bo@example.com"]
    assert emails("?status=unsubscribed") == ["cy@example.com"]
    assert emails("?search=bo") == ["bo@example.com"]
    assert emails("?email=ANA@example.com") == ["ana@example.com"]


def test_a_bad_filter_is_a_400_naming_it(api: APIClient, workspace: Workspace) -> None:
    status = api.get(URL + "?status=maybe")
    key = api.get(URL + "?attributes.pl%20an=p")

    assert status.status_code == key.status_code == 400
    assert "status" in status.json()["error"]["fields"]
    assert "attributes.pl an" in key.json()["error"]["fields"]


def test_an_orm_lookup_in_an_attribute_filter_is_only_a_key_name(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, attributes={"plan": "pro"})

    response = api.get(URL + "?attributes.plan__contains=p")

    assert response.status_code == 200
    assert len(b"".join(response.streaming_content).decode().splitlines()) == 1  # the header only


def test_the_export_is_scoped_to_the_keys_workspace(
    api: APIClient, other_api: APIClient, workspace: Workspace, other_workspace: Workspace
) -> None:
    ContactFactory(workspace=workspace, email="ours@example.com")
    ContactFactory(workspace=other_workspace, email="theirs@example.com")

    assert [r["email"] for r in read(api.get(URL))] == ["ours@example.com"]
    assert [r["email"] for r in read(other_api.get(URL))] == ["theirs@example.com"]
    assert APIClient().get(URL).status_code == 401


def test_the_command_writes_the_filtered_csv(workspace: Workspace, tmp_path: object) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com", attributes={"plan": "pro"})
    ContactFactory(workspace=workspace, email="bo@example.com", attributes={"plan": "free"})
    out = StringIO()

    call_command("export_contacts", workspace="acme", attr=["plan=pro"], stdout=out, stderr=StringIO())

    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["email"] for r in rows] == ["ana@example.com"]


def test_the_admin_action_streams_the_selected_contacts(workspace: Workspace, other_workspace: Workspace) -> None:
    user = UserFactory()
    MembershipFactory(user=user, workspace=workspace)
    ana = ContactFactory(workspace=workspace, email="ana@example.com")
    ContactFactory(workspace=workspace, email="bo@example.com")
    theirs = ContactFactory(workspace=other_workspace, email="theirs@example.com")
    client = Client()
    client.force_login(user)

    response = client.post(
        "/admin/contacts/contact/",
        {"action": "export_csv", "_selected_action": [ana.pk, theirs.pk]},
    )

    assert response.status_code == 200
    assert [r["email"] for r in read(response)] == ["ana@example.com"]
