"""The contact API and the suppression list: a product's next signup call cannot bring anyone back."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from contacts.models import Contact
from contacts.suppression import is_suppressed
from contacts.unsubscribe import unsubscribe
from crm.models import Activity, Workspace
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def unsubscribed_ana(workspace: Workspace) -> None:
    unsubscribe(contact=ContactFactory(workspace=workspace, email="ana@example.com"), source="test")
    assert not Contact.objects.filter(email_key="ana@example.com").exists()


def test_a_suppressed_address_created_again_is_unsubscribed(api: APIClient, unsubscribed_ana: None) -> None:
    response = api.post("/api/v1/contacts/", {"email": "Ana@Example.com", "name": "Ana"}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "unsubscribed"
    assert Contact.objects.get(email_key="ana@example.com").status == "unsubscribed"


def test_asking_for_subscribed_does_not_lift_a_suppression(api: APIClient, unsubscribed_ana: None) -> None:
    created = api.post("/api/v1/contacts/", {"email": "ana@example.com", "status": "subscribed"}, format="json")
    patched = api.patch("/api/v1/contacts/ana@example.com/", {"status": "subscribed"}, format="json")
    batch = api.post(
        "/api/v1/contacts/batch/", {"contacts": [{"email": "ana@example.com", "status": "subscribed"}]}, format="json"
    )

    assert created.json()["status"] == "unsubscribed"
    assert patched.json()["status"] == "unsubscribed"
    assert batch.json()["results"][0]["subscription"] == "unsubscribed"


def test_an_explicit_resubscribe_brings_the_address_back_and_is_recorded(
    api: APIClient, workspace: Workspace, unsubscribed_ana: None
) -> None:
    response = api.post("/api/v1/contacts/", {"email": "ana@example.com", "resubscribe": True}, format="json")

    assert response.status_code == 201
    assert response.json()["status"] == "subscribed"
    assert not is_suppressed(workspace, "ana@example.com")
    assert Activity.objects.filter(kind__in=["resubscribed"], workspace=workspace).exists()


def test_resubscribe_works_on_patch_too(api: APIClient, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ben@example.com")
    Workspace.objects.filter(pk=workspace.pk).update(unsubscribe_behaviour="keep")
    unsubscribe(contact=Contact.objects.get(pk=contact.pk), source="test")

    response = api.patch("/api/v1/contacts/ben@example.com/", {"resubscribe": True}, format="json")

    assert response.json()["status"] == "subscribed"
    assert not is_suppressed(workspace, "ben@example.com")
