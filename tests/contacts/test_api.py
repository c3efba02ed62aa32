from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import Enrollment
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import CampaignFactory, ContactFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/contacts/"


def test_posting_a_new_email_creates_the_contact_with_201(api: APIClient, workspace: Workspace) -> None:
    response = api.post(
        URL,
        {"email": "Ana@X.com", "name": "Ana", "phone": "+356 9912 3456", "attributes": {"language": "en"}},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email"] == "Ana@x.com"
    assert body["phone"] == "+35699123456"
    assert body["attributes"] == {"language": "en"}
    assert body["source"] == "api" and body["status"] == "subscribed"
    assert Contact.objects.get(pk=body["id"]).workspace == workspace


def test_posting_an_existing_email_in_any_case_updates_it_with_200(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@x.com", attributes={"plan": "free", "trial": True})

    response = api.post(URL, {"email": "ANA@x.com", "attributes": {"plan": "pro", "trial": None}}, format="json")

    assert response.status_code == 200
    assert response.json()["id"] == contact.pk
    assert response.json()["attributes"] == {"plan": "pro"}
    assert Contact.objects.count() == 1


def test_a_contact_can_be_read_by_id_or_by_email(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana+news@x.com")

    by_id = api.get(f"{URL}{contact.pk}/")
    by_email = api.get(f"{URL}ANA+news@x.com/")

    assert by_id.status_code == by_email.status_code == 200
    assert by_id.json() == by_email.json()
    assert by_id.json()["email"] == "ana+news@x.com"


def test_unknown_ids_and_emails_are_404_in_the_error_shape(api: APIClient, workspace: Workspace) -> None:
    for path in (f"{URL}999999/", f"{URL}nobody@x.com/", f"{URL}not-an-id/", f"{URL}99999999999999999999999/"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_patch_changes_only_given_fields_and_merges_attributes(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@x.com", name="Ana", attributes={"a": 1, "b": 2})

    response = api.patch(f"{URL}ana@x.com/", {"company": "Acme", "attributes": {"b": None, "c": 3}}, format="json")

    assert response.status_code == 200
    contact.refresh_from_db()
    assert (contact.name, contact.company, contact.attributes) == ("Ana", "Acme", {"a": 1, "c": 3})


def test_delete_by_email_removes_the_contact_with_204(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com")
    keep = ContactFactory(workspace=workspace, email="ben@x.com")

    response = api.delete(f"{URL}Ana@X.com/")

    assert response.status_code == 204
    assert list(Contact.objects.all()) == [keep]
    assert api.get(f"{URL}ana@x.com/").status_code == 404


def test_put_is_not_offered(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)

    response = api.put(f"{URL}{contact.pk}/", {"email": "x@x.com"}, format="json")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_list_pages_through_every_contact_with_a_cursor(api: APIClient, workspace: Workspace) -> None:
    ContactFactory.create_batch(7, workspace=workspace)
    seen: list[int] = []
    url: str | None = f"{URL}?limit=3"

    while url:
        response = api.get(url)
        assert response.status_code == 200
        seen += [row["id"] for row in response.json()["results"]]
        url = response.json()["next"]

    assert seen == sorted(Contact.objects.values_list("id", flat=True), reverse=True)


def test_a_tampered_cursor_is_a_400_naming_the_cursor(api: APIClient, workspace: Workspace) -> None:
    response = api.get(f"{URL}?cursor=garbage")

    assert response.status_code == 400
    assert "cursor" in response.json()["error"]["fields"]


def _emails(response: Any) -> set[str]:
    assert response.status_code == 200, response.json()
    return {row["email"] for row in response.json()["results"]}


def test_list_filters_by_email_status_and_source(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com", source="form")
    ContactFactory(workspace=workspace, email="ben@x.com", status=Contact.Status.UNSUBSCRIBED)

    assert _emails(api.get(URL, {"email": "ANA@x.com"})) == {"ana@x.com"}
    assert _emails(api.get(URL, {"status": "unsubscribed"})) == {"ben@x.com"}
    assert _emails(api.get(URL, {"source": "form"})) == {"ana@x.com"}


def test_an_unknown_status_filter_is_a_400_naming_it(api: APIClient, workspace: Workspace) -> None:
    response = api.get(URL, {"status": "maybe"})

    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


def test_list_filters_by_attribute_values_of_any_json_type(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com", attributes={"plan": "pro", "seats": 5, "vip": True})
    ContactFactory(workspace=workspace, email="ben@x.com", attributes={"plan": "free", "seats": "5"})
    ContactFactory(workspace=workspace, email="cat@x.com", attributes={})

    assert _emails(api.get(URL, {"attributes.plan": "pro"})) == {"ana@x.com"}
    assert _emails(api.get(URL, {"attributes.seats": "5"})) == {"ana@x.com", "ben@x.com"}
    assert _emails(api.get(URL, {"attributes.vip": "true"})) == {"ana@x.com"}
    assert _emails(api.get(URL, {"attributes.plan": "free", "attributes.seats": "5"})) == {"ben@x.com"}
    assert _emails(api.get(URL, {"attributes.missing": "x"})) == set()


def test_an_attribute_filter_with_a_bad_name_is_a_400(api: APIClient, workspace: Workspace) -> None:
    response = api.get(URL, {"attributes.a b": "x"})

    assert response.status_code == 400
    assert "attributes.a b" in response.json()["error"]["fields"]


def test_search_matches_name_email_company_and_any_phone_spelling(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@x.com", name="Ana Borg", phone="+35699123456", company="")
    ContactFactory(workspace=workspace, email="ben@globex.com", name="Ben", company="Initech")
    ContactFactory(workspace=workspace, email="cat@x.com", name="Cat", phone="+447700900123")

    assert _emails(api.get(URL, {"search": "borg"})) == {"ana@x.com"}
    assert _emails(api.get(URL, {"search": "GLOBEX"})) == {"ben@globex.com"}
    assert _emails(api.get(URL, {"search": "initech"})) == {"ben@globex.com"}
    for spelling in ("+356 9912 3456", "99123456", "(9912) 3456", "+35699123456"):
        assert _emails(api.get(URL, {"search": spelling})) == {"ana@x.com"}, spelling
    assert _emails(api.get(URL, {"search": "07700 900123"})) == {"cat@x.com"}


def test_batch_upserts_good_items_and_reports_bad_ones_by_field(api: APIClient, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="old@x.com")

    response = api.post(
        f"{URL}batch/",
        {
            "contacts": [
                {"email": "new@x.com", "name": "New"},
                {"email": "nope"},
                {"email": "OLD@x.com", "company": "Acme"},
                {"email": "ok@x.com", "phone": "12"},
                {"email": "x@x.com", "colour": "red"},
            ]
        },
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["created"], body["updated"], body["errors"]) == (1, 1, 3)
    assert [r["status"] for r in body["results"]] == ["created", "error", "updated", "error", "error"]
    assert "email" in body["results"][1]["error"]["fields"]
    assert "phone" in body["results"][3]["error"]["fields"]
    assert "colour" in body["results"][4]["error"]["fields"]
    assert body["results"][0]["id"] == Contact.objects.get(email_key="new@x.com").pk
    assert Contact.objects.get(email_key="old@x.com").company == "Acme"
    assert Contact.objects.count() == 2


def test_batch_accepts_a_thousand_items(api: APIClient, workspace: Workspace) -> None:
    items = [{"email": f"p{n}@x.com", "attributes": {"n": n}} for n in range(1000)]

    response = api.post(f"{URL}batch/", {"contacts": items}, format="json")

    assert response.status_code == 200
    assert response.json()["created"] == 1000
    assert Contact.objects.filter(workspace=workspace).count() == 1000


def test_contacts_are_created_in_the_keys_workspace_only(
    api: APIClient, workspace: Workspace, other_workspace: Workspace
) -> None:
    api.post(URL, {"email": "ana@x.com"}, format="json")

    assert Contact.objects.get().workspace == workspace
    assert not Contact.objects.filter(workspace=other_workspace).exists()


class TestTenantIsolation:
    """A key of workspace A never sees or touches workspace B's contacts: 404, as if absent."""

    @pytest.fixture
    def theirs(self, other_workspace: Workspace) -> Contact:
        return ContactFactory(workspace=other_workspace, email="secret@globex.com", name="Secret")

    @pytest.mark.parametrize("lookup", ["id", "email"])
    def test_get_patch_and_delete_of_another_workspaces_contact_are_404(
        self, api: APIClient, theirs: Contact, lookup: str
    ) -> None:
        path = f"{URL}{theirs.pk if lookup == 'id' else theirs.email}/"

        assert api.get(path).status_code == 404
        assert api.patch(path, {"name": "Hacked"}, format="json").status_code == 404
        assert api.delete(path).status_code == 404

        theirs.refresh_from_db()
        assert theirs.name == "Secret"

    def test_list_and_search_never_show_another_workspaces_contacts(self, api: APIClient, theirs: Contact) -> None:
        assert _emails(api.get(URL)) == set()
        assert _emails(api.get(URL, {"search": "secret"})) == set()
        assert _emails(api.get(URL, {"email": theirs.email})) == set()

    def test_upserting_the_same_email_creates_a_separate_contact(
        self, api: APIClient, theirs: Contact, workspace: Workspace
    ) -> None:
        single = api.post(URL, {"email": theirs.email, "name": "Mine"}, format="json")
        batch = api.post(f"{URL}batch/", {"contacts": [{"email": theirs.email, "company": "Mine"}]}, format="json")

        assert single.status_code == 201
        assert batch.json()["results"][0]["status"] == "updated"
        assert batch.json()["results"][0]["id"] == single.json()["id"] != theirs.pk
        theirs.refresh_from_db()
        assert (theirs.name, theirs.company) == ("Secret", "")


def test_delete_also_removes_the_contacts_enrollments(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@x.com")
    now = timezone.now()
    Enrollment.objects.create(
        campaign=CampaignFactory(workspace=workspace), contact=contact, enrolled_at=now, enrolled_on=now.date()
    )

    assert api.delete(f"{URL}ana@x.com/").status_code == 204

    assert not Enrollment.objects.exists()


def test_paths_work_without_the_trailing_slash(api: APIClient, workspace: Workspace) -> None:
    created = api.post("/api/v1/contacts", {"email": "ana@x.com"}, format="json")
    batch = api.post("/api/v1/contacts/batch", {"contacts": [{"email": "ben@x.com"}]}, format="json")

    assert created.status_code == 201
    assert batch.status_code == 200
    assert api.get("/api/v1/contacts/ana@x.com").json()["id"] == created.json()["id"]
    assert api.delete(f"/api/v1/contacts/{created.json()['id']}").status_code == 204
