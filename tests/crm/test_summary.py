from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.test import Client

from crm.models import Activity, Workspace
from crm.services import change_status, workspace_summary
from tests.factories import (
    ChargeFactory,
    ContactFactory,
    MembershipFactory,
    PaymentFactory,
    RecurringPlanFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_the_summary_counts_statuses_money_per_currency_missed_and_new_contacts(workspace: Workspace) -> None:
    with time_machine.travel(NOW - timedelta(days=45), tick=False):
        old = ContactFactory(workspace=workspace)
    with time_machine.travel(NOW - timedelta(days=3), tick=False):
        fresh = ContactFactory(workspace=workspace)
        ContactFactory(workspace=workspace).archive()
        Activity.objects.create(workspace=workspace, contact=fresh, kind="form_submission", summary="Pricing wizard")
    change_status(contact=old, to="delivered", actor="t")
    ChargeFactory(contact=old, amount=Decimal("1000.00"), due_on=date(2026, 6, 1))
    PaymentFactory(contact=old, amount=Decimal("400.00"))
    PaymentFactory(contact=fresh, amount=Decimal("20.00"), currency="USD")
    RecurringPlanFactory(contact=fresh, started_at=NOW - timedelta(days=60))

    with time_machine.travel(NOW, tick=False):
        summary = workspace_summary(workspace=workspace)

    counts = {slug: n for slug, _, n in summary["by_status"]}
    assert counts["lead"] == 1 and counts["delivered"] == 1 and sum(counts.values()) == 2
    assert summary["archived"] == 1
    money = {b.currency: (b.charged, b.paid, b.pending) for b in summary["money"]}
    assert money == {
        "EUR": (Decimal("1000.00"), Decimal("400.00"), Decimal("600.00")),
        "USD": (Decimal("0"), Decimal("20.00"), Decimal("-20.00")),
    }
    assert (len(summary["missed"].plans), len(summary["missed"].balances)) == (1, 1)
    assert summary["new_contacts"] == 2
    assert summary["form_submissions"] == 1


@pytest.fixture
def member(client: Client, workspace: Workspace) -> Client:
    user = UserFactory(username="ana")
    MembershipFactory(user=user, workspace=workspace)
    client.force_login(user)
    return client


def test_a_member_sees_their_workspace_summary(member: Client, workspace: Workspace) -> None:
    ContactFactory(workspace=workspace)

    response = member.get("/crm/summary/acme/")

    assert response.status_code == 200
    assert response.context["by_status"][0] == ("lead", "Lead", 1)
    assert b"acme" in member.get("/crm/summary/").content


def test_another_workspaces_summary_and_missed_payments_are_hidden(member: Client, other_workspace: Workspace) -> None:
    ChargeFactory(contact__workspace=other_workspace, contact__email="debtor@example.com", due_on=date(2020, 1, 1))

    assert member.get("/crm/summary/globex/").status_code == 404
    assert b"globex" not in member.get("/crm/summary/").content
    for url in ("/crm/missed-payments/", "/crm/missed-payments/?workspace=globex", "/admin/crm/payment/missed/"):
        response = member.get(url)
        assert response.status_code == 200
        assert b"debtor@example.com" not in response.content


def test_the_missed_payments_page_lists_the_members_overdue_contacts(member: Client, workspace: Workspace) -> None:
    ChargeFactory(contact__workspace=workspace, contact__email="late@example.com", due_on=date(2020, 1, 1))

    for url in ("/crm/missed-payments/", "/admin/crm/payment/missed/"):
        assert b"late@example.com" in member.get(url).content


@pytest.mark.parametrize("url", ["/crm/summary/", "/crm/summary/acme/", "/crm/missed-payments/"])
def test_the_pages_are_for_staff_only(client: Client, workspace: Workspace, url: str) -> None:
    assert client.get(url).status_code == 302
    outsider: Any = UserFactory(username="visitor", is_staff=False)
    MembershipFactory(user=outsider, workspace=workspace)
    client.force_login(outsider)
    assert client.get(url).status_code == 302
