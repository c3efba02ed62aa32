from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from contacts.models import Contact
from crm.models import Activity, Workspace
from crm.services import add_interaction, change_status
from tests.factories import ContactFactory, PaymentFactory, UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


def test_a_workspace_starts_with_the_seven_default_statuses(workspace: Workspace) -> None:
    assert workspace.status_slugs == [
        "lead",
        "proposal_sent",
        "proposal_signed",
        "deposit_paid",
        "waiting_production",
        "in_production",
        "delivered",
    ]
    assert workspace.status_label("deposit_paid") == "Deposit paid"
    assert ContactFactory(workspace=workspace).lifecycle_status == "lead"


def test_it_records_every_status_change_with_who_when_and_from_to(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    user = UserFactory(username="ana")

    first = change_status(contact=contact, to="proposal_sent", actor=user)
    second = change_status(contact=contact, to="proposal_signed", actor="api:trk_1234")

    contact.refresh_from_db()
    assert contact.lifecycle_status == "proposal_signed"
    assert first is not None and second is not None
    assert (first.kind, first.data, first.actor) == (
        Activity.Kind.STATUS_CHANGE,
        {"from": "lead", "to": "proposal_sent"},
        "ana",
    )
    assert second.data == {"from": "proposal_sent", "to": "proposal_signed"}
    assert second.actor == "api:trk_1234"
    assert second.summary == "Status: Proposal sent → Proposal signed"
    assert list(Activity.objects.for_contact(contact.pk)) == [second, first]


def test_it_refuses_a_status_outside_the_workspace_list(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)

    with pytest.raises(ValidationError) as exc:
        change_status(contact=contact, to="won", actor="tests")

    assert "lifecycle_status" in exc.value.message_dict
    contact.refresh_from_db()
    assert contact.lifecycle_status == "lead"
    assert not Activity.objects.filter(contact=contact).exists()


def test_setting_the_same_status_records_nothing(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)

    assert change_status(contact=contact, to="lead", actor="tests") is None
    assert not Activity.objects.filter(contact=contact).exists()


def test_a_custom_pipeline_starts_contacts_at_its_first_status() -> None:
    workspace = WorkspaceFactory(
        lifecycle_statuses=[{"slug": "trial", "label": "Trial"}, {"slug": "paying", "label": "Paying"}],
        status_on_payment="paying",
    )
    contact = ContactFactory(workspace=workspace)

    assert contact.lifecycle_status == "trial"
    contact.lifecycle_status = "deposit_paid"
    with pytest.raises(ValidationError) as exc:
        contact.full_clean()
    assert "lifecycle_status" in exc.value.message_dict


@pytest.mark.parametrize(
    "statuses",
    [
        [],
        [{"slug": "Lead Stage", "label": "Lead"}],
        [{"slug": "lead", "label": "Lead"}, {"slug": "lead", "label": "Again"}],
        [{"slug": "lead"}],
        "lead,won",
    ],
)
def test_it_validates_the_status_list(workspace: Workspace, statuses: object) -> None:
    workspace.lifecycle_statuses = statuses
    with pytest.raises(ValidationError) as exc:
        workspace.full_clean()
    assert "lifecycle_statuses" in exc.value.message_dict


def test_archive_hides_a_contact_from_default_lists_and_unarchive_restores_it(workspace: Workspace) -> None:
    kept = ContactFactory(workspace=workspace)
    finished = ContactFactory(workspace=workspace)

    finished.archive()
    assert finished.is_archived
    assert list(Contact.objects.not_archived()) == [kept]
    assert list(Contact.objects.archived()) == [finished]

    finished.unarchive()
    assert set(Contact.objects.not_archived()) == {kept, finished}


def test_business_records_are_payments_notes_or_a_status_past_lead(workspace: Workspace) -> None:
    plain = ContactFactory(workspace=workspace)
    with_notes = ContactFactory(workspace=workspace, notes="Prefers calls after 5pm")
    paid = ContactFactory(workspace=workspace)
    PaymentFactory(contact=paid)
    advanced = ContactFactory(workspace=workspace)
    change_status(contact=advanced, to="proposal_sent", actor="tests")
    called = ContactFactory(workspace=workspace)
    add_interaction(contact=called, kind=Activity.Kind.CALL, text="Discussed the quote", actor="tests")

    assert not plain.has_business_records()
    assert with_notes.has_business_records()
    assert paid.has_business_records()
    assert advanced.has_business_records()
    assert called.has_business_records()


def test_add_interaction_accepts_only_notes_and_calls(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)

    with pytest.raises(ValidationError):
        add_interaction(contact=contact, kind=Activity.Kind.STATUS_CHANGE, text="sneaky", actor="tests")
    with pytest.raises(ValidationError):
        add_interaction(contact=contact, kind=Activity.Kind.NOTE, text="   ", actor="tests")
    note = add_interaction(contact=contact, kind=Activity.Kind.NOTE, text="Sent the moodboard", actor="tests")
    assert note.workspace_id == workspace.pk and note.summary == "Sent the moodboard"


def test_status_on_payment_must_be_one_of_the_statuses(workspace: Workspace) -> None:
    workspace.lifecycle_statuses = [{"slug": "trial", "label": "Trial"}, {"slug": "paying", "label": "Paying"}]

    with pytest.raises(ValidationError) as exc:
        workspace.full_clean()
    assert "status_on_payment" in exc.value.message_dict

    workspace.status_on_payment = "paying"
    workspace.full_clean()
