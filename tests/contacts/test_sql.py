from __future__ import annotations

import pytest
from django.db import connection

from contacts.models import Contact
from contacts.sql import fetch_instances, pg_execute, text_array
from crm.models import Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("server-side binding is the PostgreSQL bulk path; SQLite uses the ORM")


def test_fetched_instances_equal_what_the_orm_loads(workspace: Workspace) -> None:
    ana = ContactFactory(workspace=workspace, email="ana@example.com", attributes={"plan": "pro", "seats": 5})
    ContactFactory(workspace=workspace, email="bob@example.com")

    where = "workspace_id = %s AND email_key = ANY(%s)"
    (fetched,) = fetch_instances(Contact, where, [workspace.pk, ["ana@example.com"]])

    loaded = Contact.objects.get(pk=ana.pk)
    assert fetched.pk == ana.pk
    assert fetched.attributes == {"plan": "pro", "seats": 5}
    for field in Contact._meta.concrete_fields:
        assert getattr(fetched, field.attname) == getattr(loaded, field.attname), field.name
    assert not fetched._state.adding


def test_an_array_parameter_carries_thousands_of_values(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com")
    keys = [f"nobody{i}@example.com" for i in range(5000)] + ["ana@example.com"]

    rows = pg_execute(
        "SELECT email_key FROM contacts_contact WHERE workspace_id = %s AND email_key = ANY(%s)",
        [workspace.pk, keys],
        fetch=True,
    )

    assert rows == [("ana@example.com",)]


@pytest.mark.parametrize(
    "values",
    [["a", "b,c", "", "d'e"], [""], ["x\x1fy", "z"], ['{"plan": "pro"}'], ["", ""]],
    ids=["plain", "one-empty", "separator-inside", "one", "two-empty"],
)
def test_a_text_array_round_trips_every_value(values: list[str]) -> None:
    array, param = text_array(values)

    (row,) = pg_execute(f"SELECT {array}", [param], fetch=True)

    assert row[0] == values
