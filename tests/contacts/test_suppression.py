from __future__ import annotations

import hashlib

import pytest
from django.test import override_settings

from contacts.models import Contact
from contacts.suppression import Suppression, is_suppressed, suppression_hash, suppression_hasher
from contacts.unsubscribe import suppress_address, unsubscribe
from crm.models import Activity, Workspace
from tests.factories import ContactFactory, DeliveryFactory

pytestmark = pytest.mark.django_db


def test_the_hash_is_keyed_and_ignores_case_and_spaces() -> None:
    digest = suppression_hash(1, " Ana@Example.COM ")
    assert digest == suppression_hash(1, "ana@example.com")
    assert len(digest) == 64
    # Not a plain hash anyone could compute from the address.
    assert digest != hashlib.sha256(b"ana@example.com").hexdigest()
    assert digest != hashlib.sha256(b"1:ana@example.com").hexdigest()
    with override_settings(SUPPRESSION_KEY="another-key"):
        assert suppression_hash(1, "ana@example.com") != digest


def test_the_hash_differs_between_workspaces() -> None:
    assert suppression_hash(1, "ana@example.com") != suppression_hash(2, "ana@example.com")


def test_the_bulk_hasher_gives_the_same_hashes_as_the_single_one() -> None:
    hash_of = suppression_hasher(3)
    for email in (" Ana@Example.COM ", "bob@example.com", "zoë@exämple.de"):
        assert hash_of(email) == suppression_hash(3, email)
    assert hash_of("ana@example.com") != suppression_hasher(4)("ana@example.com")


def test_contacts_carry_their_address_hash(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="Ana@Example.com")
    assert contact.email_hash == suppression_hash(workspace.pk, "ana@example.com")
    contact.email = "bob@example.com"
    contact.save(update_fields=["email"])
    contact.refresh_from_db()
    assert contact.email_hash == suppression_hash(workspace.pk, "bob@example.com")


def test_a_recreated_contact_stays_suppressed_and_is_left_out_of_enrollment(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace, email="ana@example.com")
    unsubscribe(contact=contact, source="one-click")
    assert not Contact.objects.filter(email_key="ana@example.com").exists()

    again = ContactFactory(workspace=workspace, email="ANA@example.com")
    other = ContactFactory(workspace=workspace, email="bob@example.com")

    assert is_suppressed(workspace, "ana@example.com")
    # The anti-join the engine's enrollment uses.
    assert list(Contact.objects.filter(workspace=workspace).not_suppressed()) == [other]
    assert list(Contact.objects.filter(workspace=workspace).suppressed()) == [again]


def test_suppression_is_per_workspace(workspace: Workspace, other_workspace: Workspace) -> None:
    suppress_address(workspace=workspace, email="ana@example.com", reason="manual", source="test")
    elsewhere = ContactFactory(workspace=other_workspace, email="ana@example.com")
    assert not is_suppressed(other_workspace, "ana@example.com")
    assert list(Contact.objects.filter(workspace=other_workspace).not_suppressed()) == [elsewhere]


def test_suppressing_an_address_keeps_its_contact_but_marks_it_and_skips_its_queue(workspace: Workspace) -> None:
    delivery = DeliveryFactory(enrollment__campaign__workspace=workspace)
    contact = delivery.contact

    suppress_address(workspace=workspace, email=contact.email, reason=Suppression.Reason.BOUNCE, source="ses")

    contact.refresh_from_db()
    delivery.refresh_from_db()
    assert contact.status == Contact.Status.UNSUBSCRIBED
    assert delivery.status == "skipped"
    assert Activity.objects.filter(contact=contact, kind=Activity.Kind.BOUNCED).count() == 1


def test_suppressing_twice_keeps_one_entry_and_a_complaint_wins(workspace: Workspace) -> None:
    suppress_address(workspace=workspace, email="ana@example.com", reason="unsubscribe", source="page")
    suppress_address(workspace=workspace, email="ana@example.com", reason="complaint", source="ses")
    suppress_address(workspace=workspace, email="ana@example.com", reason="bounce", source="ses")
    entry = Suppression.objects.get()
    assert entry.reason == Suppression.Reason.COMPLAINT
    assert entry.source == "page"


def test_an_address_without_a_contact_can_be_suppressed(workspace: Workspace) -> None:
    suppress_address(workspace=workspace, email="ghost@example.com", reason="complaint", source="ses")
    assert is_suppressed(workspace.pk, "Ghost@example.com")
    activity = Activity.objects.get()
    assert activity.contact is None
    assert activity.data["email_hash"] == suppression_hash(workspace.pk, "ghost@example.com")


def test_suppressed_hashes_queryset_lists_only_that_workspace(workspace: Workspace, other_workspace: Workspace) -> None:
    suppress_address(workspace=workspace, email="a@example.com", reason="manual", source="t")
    suppress_address(workspace=other_workspace, email="b@example.com", reason="manual", source="t")
    hashes = {row["email_hash"] for row in Suppression.objects.for_workspace(workspace).hashes()}
    assert hashes == {suppression_hash(workspace.pk, "a@example.com")}


def test_hashes_in_answers_for_one_workspace_only(workspace: Workspace, other_workspace: Workspace) -> None:
    suppress_address(workspace=workspace, email="a@example.com", reason="manual", source="t")
    suppress_address(workspace=other_workspace, email="b@example.com", reason="manual", source="t")
    asked = [suppression_hash(workspace.pk, email) for email in ("a@example.com", "b@example.com", "c@example.com")]

    found = Suppression.objects.hashes_in(workspace_id=workspace.pk, hashes=asked)

    assert found == {suppression_hash(workspace.pk, "a@example.com")}
    assert Suppression.objects.hashes_in(workspace_id=workspace.pk, hashes=[]) == set()


def test_the_engine_never_enrolls_a_suppressed_address_even_if_marked_subscribed(workspace: Workspace) -> None:
    from django.utils import timezone

    from campaigns.models import Enrollment
    from campaigns.services import enroll
    from tests.factories import CampaignFactory

    campaign = CampaignFactory(workspace=workspace, contact_filter="")
    suppress_address(workspace=workspace, email="ana@example.com", reason="complaint", source="ses")
    # Re-created by an import or an API call that ignored the list, status left `subscribed`.
    ContactFactory(workspace=workspace, email="ana@example.com")
    other = ContactFactory(workspace=workspace, email="bob@example.com")

    enroll(campaign, at=timezone.now())

    assert list(Enrollment.objects.values_list("contact_id", flat=True)) == [other.pk]
