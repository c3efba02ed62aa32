from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from contacts.models import Contact
from crm.models import Activity, Payment, Workspace
from tests.factories import ContactFactory, MembershipFactory, PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(workspace: Workspace) -> Any:
    user = UserFactory(username="marta")
    MembershipFactory(user=user, workspace=workspace)
    return user


@pytest.fixture
def admin_client(client: Client, staff: Any) -> Client:
    client.force_login(staff)
    return client


def payment_form(payment: Payment, **changes: Any) -> dict[str, Any]:
    data = {
        "contact": payment.contact_id,
        "amount": str(payment.amount),
        "currency": payment.currency,
        "kind": payment.kind,
        "provider": payment.provider,
        "provider_reference": payment.provider_reference,
        "description": payment.description,
        "paid_at_0": payment.paid_at.strftime("%Y-%m-%d"),
        "paid_at_1": payment.paid_at.strftime("%H:%M:%S"),
    }
    return {**data, **changes}


def contact_form(contact: Contact, **changes: Any) -> dict[str, Any]:
    data = {
        "workspace": contact.workspace_id,
        "email": contact.email,
        "name": contact.name,
        "company": contact.company,
        "phone": contact.phone,
        "lifecycle_status": contact.lifecycle_status,
        "notes": contact.notes,
        "attributes": "{}",
        "source": contact.source,
        "status": contact.status,
        "activities-TOTAL_FORMS": "1",
        "activities-INITIAL_FORMS": "0",
        "activities-MIN_NUM_FORMS": "0",
        "activities-MAX_NUM_FORMS": "1000",
    }
    return {**data, **changes}


def test_it_records_who_changed_a_payment_amount_and_when(
    admin_client: Client, staff: Any, workspace: Workspace
) -> None:
    payment = PaymentFactory(
        contact__workspace=workspace, amount=Decimal("50000.00"), paid_at=datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    )

    response = admin_client.post(f"/admin/crm/payment/{payment.pk}/change/", payment_form(payment, amount="30000.00"))

    assert response.status_code == 302, response.content
    latest, previous = payment.history.order_by("-history_date", "-history_id")[:2]
    assert (previous.amount, latest.amount) == (Decimal("50000.000"), Decimal("30000.000"))
    assert latest.history_user == staff and latest.history_type == "~"
    delta = latest.diff_against(previous)
    assert [(c.field, c.old, c.new) for c in delta.changes] == [("amount", Decimal("50000.000"), Decimal("30000.000"))]
    page = admin_client.get(f"/admin/crm/payment/{payment.pk}/history/")
    assert page.status_code == 200 and b"marta" in page.content


def test_a_contact_edit_in_the_admin_is_audited_and_a_status_change_lands_on_the_timeline(
    admin_client: Client, staff: Any, workspace: Workspace
) -> None:
    contact = ContactFactory(workspace=workspace, company="Old Ltd")

    response = admin_client.post(
        f"/admin/contacts/contact/{contact.pk}/change/",
        contact_form(contact, company="New Ltd", lifecycle_status="proposal_sent"),
    )

    assert response.status_code == 302, response.content
    contact.refresh_from_db()
    assert (contact.company, contact.lifecycle_status) == ("New Ltd", "proposal_sent")
    change = Activity.objects.get(contact=contact, kind=Activity.Kind.STATUS_CHANGE)
    assert change.data == {"from": "lead", "to": "proposal_sent"} and change.actor == "marta"
    companies = [h.company for h in contact.history.order_by("history_date", "history_id")]
    assert companies[0] == "Old Ltd" and companies[-1] == "New Ltd"
    assert all(h.history_user == staff for h in contact.history.all()[:2])


def test_a_status_outside_the_list_is_refused_by_the_admin_form(admin_client: Client, workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)

    response = admin_client.post(
        f"/admin/contacts/contact/{contact.pk}/change/", contact_form(contact, lifecycle_status="won")
    )

    assert response.status_code == 200
    contact.refresh_from_db()
    assert contact.lifecycle_status == "lead"


def test_machine_fields_are_not_audited(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    before = contact.history.count()

    contact.attributes = {"plan": "pro"}
    contact.save(update_fields=["attributes"])
    contact.name = "Renamed"
    contact.save(update_fields=["name"])

    assert contact.history.count() == before + 1
    assert not hasattr(contact.history.model, "attributes") or "attributes" not in {
        f.name for f in contact.history.model._meta.fields
    }


def test_another_workspaces_history_is_not_visible(admin_client: Client, other_workspace: Workspace) -> None:
    payment = PaymentFactory(contact__workspace=other_workspace)
    contact = payment.contact

    assert admin_client.get(f"/admin/crm/payment/{payment.pk}/history/").status_code in (403, 404)
    assert admin_client.get(f"/admin/contacts/contact/{contact.pk}/history/").status_code in (403, 404)
    history_id = payment.history.first().history_id
    assert admin_client.get(f"/admin/crm/payment/{payment.pk}/history/{history_id}/").status_code in (403, 404)
    response = admin_client.post(f"/admin/crm/payment/{payment.pk}/change/", payment_form(payment, amount="1.00"))
    assert response.status_code in (302, 403, 404)
    payment.refresh_from_db()
    assert payment.amount == Decimal("100.000")


def test_a_payment_can_only_be_attached_to_a_contact_of_ones_own_workspaces(
    admin_client: Client, workspace: Workspace, other_workspace: Workspace
) -> None:
    mine = PaymentFactory(contact__workspace=workspace)
    foreign_contact = ContactFactory(workspace=other_workspace)

    response = admin_client.post(
        f"/admin/crm/payment/{mine.pk}/change/", payment_form(mine, contact=foreign_contact.pk)
    )

    assert response.status_code == 200  # the form error page
    mine.refresh_from_db()
    assert mine.contact.workspace == workspace
    assert not Payment.objects.filter(contact=foreign_contact).exists()


@pytest.mark.parametrize(
    "url",
    ["/admin/crm/payment/", "/admin/crm/charge/", "/admin/crm/recurringplan/", "/admin/crm/stripeevent/"],
)
def test_money_lists_show_only_ones_own_workspaces(
    admin_client: Client, workspace: Workspace, other_workspace: Workspace, url: str
) -> None:
    PaymentFactory(contact__workspace=other_workspace, contact__email="foreign@example.com")

    response = admin_client.get(url)

    assert response.status_code == 200
    assert b"foreign@example.com" not in response.content
    assert b"Globex" not in response.content


def test_the_record_admin_pages_render(admin_client: Client, workspace: Workspace) -> None:
    payment = PaymentFactory(contact__workspace=workspace)
    urls = [
        "/admin/crm/payment/add/",
        f"/admin/crm/payment/{payment.pk}/change/",
        "/admin/crm/charge/add/",
        "/admin/crm/recurringplan/add/",
        f"/admin/crm/workspace/{workspace.pk}/change/",
        "/admin/contacts/contact/add/",
        f"/admin/contacts/contact/{payment.contact_id}/change/",
        f"/admin/contacts/contact/{payment.contact_id}/history/",
    ]
    for url in urls:
        assert admin_client.get(url).status_code == 200, url
