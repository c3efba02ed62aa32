from __future__ import annotations

from typing import Any

import pytest
from rest_framework import serializers

from contacts import services
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


def test_it_treats_emails_differing_only_in_case_as_one_contact(workspace: Workspace) -> None:
    first, created = services.upsert_contact(workspace=workspace, data={"email": "Ana@X.com", "name": "Ana"})
    second, created_again = services.upsert_contact(workspace=workspace, data={"email": " ana@x.COM "})

    assert (created, created_again) == (True, False)
    assert first.pk == second.pk
    assert Contact.objects.filter(workspace=workspace).count() == 1
    assert Contact.objects.get().name == "Ana"


def test_it_overwrites_given_fields_and_keeps_omitted_ones(workspace: Workspace) -> None:
    services.upsert_contact(workspace=workspace, data={"email": "ana@x.com", "name": "Ana", "company": "Acme"})

    contact, _ = services.upsert_contact(workspace=workspace, data={"email": "ana@x.com", "company": "Globex"})

    contact.refresh_from_db()
    assert (contact.name, contact.company) == ("Ana", "Globex")


def test_it_merges_attributes_key_by_key_and_removes_keys_set_to_null(workspace: Workspace) -> None:
    services.upsert_contact(
        workspace=workspace,
        data={"email": "ana@x.com", "attributes": {"language": "en", "plan": "free", "trial": True}},
    )

    contact, _ = services.upsert_contact(
        workspace=workspace, data={"email": "ana@x.com", "attributes": {"plan": "pro", "trial": None, "seats": 5}}
    )

    contact.refresh_from_db()
    assert contact.attributes == {"language": "en", "plan": "pro", "seats": 5}


def test_it_stores_phones_in_e164_and_searchable_digits(workspace: Workspace) -> None:
    contact, _ = services.upsert_contact(workspace=workspace, data={"email": "ana@x.com", "phone": "+356 9912 3456"})

    contact.refresh_from_db()
    assert (contact.phone, contact.phone_digits) == ("+35699123456", "35699123456")


def test_it_refuses_a_phone_without_country_code_unless_a_default_region_is_set(
    workspace: Workspace, settings: Any
) -> None:
    with pytest.raises(serializers.ValidationError) as caught:
        services.upsert_contact(workspace=workspace, data={"email": "ana@x.com", "phone": "9912 3456"})
    assert "phone" in caught.value.detail
    assert not Contact.objects.exists()

    settings.PHONE_DEFAULT_REGION = "MT"
    contact, _ = services.upsert_contact(workspace=workspace, data={"email": "ana@x.com", "phone": "9912 3456"})
    assert contact.phone == "+35699123456"


def test_new_contacts_get_the_given_source_unless_the_data_names_one(workspace: Workspace) -> None:
    form, _ = services.upsert_contact(workspace=workspace, data={"email": "a@x.com"}, source="form")
    named, _ = services.upsert_contact(workspace=workspace, data={"email": "b@x.com", "source": "pricing_wizard"})

    assert (form.source, named.source) == ("form", "pricing_wizard")


def test_batch_reports_one_result_per_item_and_stores_the_good_ones(workspace: Workspace) -> None:
    existing = ContactFactory(workspace=workspace, email="old@x.com", attributes={"plan": "free"})

    results = services.upsert_contacts(
        workspace=workspace,
        items=[
            {"email": "new@x.com"},
            {"email": "not an email"},
            {"email": "OLD@x.com", "attributes": {"plan": "pro"}},
            "not an object",
        ],
    )

    assert [r.status for r in results] == ["created", "error", "updated", "error"]
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert results[1].error is not None and "email" in results[1].error["fields"]
    assert results[2].contact is not None and results[2].contact.pk == existing.pk
    existing.refresh_from_db()
    assert existing.attributes == {"plan": "pro"}
    assert set(Contact.objects.values_list("email_key", flat=True)) == {"new@x.com", "old@x.com"}


def test_batch_applies_items_naming_one_email_in_order_to_one_contact(workspace: Workspace) -> None:
    results = services.upsert_contacts(
        workspace=workspace,
        items=[
            {"email": "ana@x.com", "name": "Ana", "attributes": {"a": 1}},
            {"email": "ANA@x.com", "attributes": {"b": 2}},
        ],
    )

    assert [r.status for r in results] == ["created", "updated"]
    contact = Contact.objects.get()
    assert (contact.name, contact.attributes) == ("Ana", {"a": 1, "b": 2})


def test_batch_does_not_query_per_item(workspace: Workspace, django_assert_max_num_queries: Any) -> None:
    ContactFactory.create_batch(50, workspace=workspace)
    existing = list(Contact.objects.filter(workspace=workspace).values_list("email", flat=True))
    items = [{"email": email, "name": "Updated"} for email in existing] + [
        {"email": f"new{n}@x.com"} for n in range(200)
    ]

    # One read, the inserts and the updates in a few statements (SQLite splits them at its
    # parameter limit), plus savepoints: far fewer than the 250 items.
    with django_assert_max_num_queries(15):
        results = services.upsert_contacts(workspace=workspace, items=items)

    assert sum(r.status == "created" for r in results) == 200
    assert Contact.objects.filter(workspace=workspace, name="Updated").count() == 50


def test_it_turns_a_lost_insert_race_into_an_update(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another request creates the same email between our read and our insert."""
    real_existing = services._existing
    calls = {"n": 0}

    def existing_then_concurrent_insert(**kwargs: Any) -> list[Contact]:
        rows = real_existing(**kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            ContactFactory(workspace=workspace, email="ana@x.com", name="From the other request", attributes={"a": 1})
        return rows

    monkeypatch.setattr(services, "_existing", existing_then_concurrent_insert)

    contact, created = services.upsert_contact(workspace=workspace, data={"email": "Ana@x.com", "attributes": {"b": 2}})

    assert created is False
    assert calls["n"] == 2
    stored = Contact.objects.get(workspace=workspace)
    assert stored.pk == contact.pk
    assert (stored.name, stored.attributes) == ("From the other request", {"a": 1, "b": 2})


def test_it_scopes_dedupe_to_the_workspace(workspace: Workspace, other_workspace: Workspace) -> None:
    ContactFactory(workspace=other_workspace, email="ana@x.com")

    _, created = services.upsert_contact(workspace=workspace, data={"email": "ana@x.com"})

    assert created is True
    assert Contact.objects.filter(email_key="ana@x.com").count() == 2


def test_update_refuses_an_email_another_contact_has(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com")
    ben = ContactFactory(workspace=workspace, email="ben@x.com")

    with pytest.raises(serializers.ValidationError) as caught:
        services.update_contact(contact=ben, data={"email": "ANA@x.com"})

    assert "email" in caught.value.detail
    ben.refresh_from_db()
    assert ben.email == "ben@x.com"
