from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from contacts.models import Contact
from crm.models import Payment, Workspace, from_minor_units
from crm.services import missed_payments, record_payment
from tests.factories import ChargeFactory, ContactFactory, PaymentFactory, RecurringPlanFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_pending_is_charged_minus_paid_with_refunds_subtracting(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    ChargeFactory(contact=contact, amount=Decimal("50000.00"))
    PaymentFactory(contact=contact, amount=Decimal("15000.10"), kind=Payment.Kind.DEPOSIT)
    PaymentFactory(contact=contact, amount=Decimal("0.20"))
    PaymentFactory(contact=contact, amount=Decimal("-0.10"), kind=Payment.Kind.REFUND)

    balance = contact.balances()["EUR"]

    assert balance.charged == Decimal("50000.00")
    assert balance.paid == Decimal("15000.20")
    assert balance.pending == Decimal("34999.80")
    annotated = Contact.objects.with_balance("EUR").get(pk=contact.pk)
    assert (annotated.charged, annotated.paid, annotated.pending) == (
        Decimal("50000.00"),
        Decimal("15000.20"),
        Decimal("34999.80"),
    )


def test_currencies_are_never_mixed(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    ChargeFactory(contact=contact, amount=Decimal("100"), currency="EUR")
    PaymentFactory(contact=contact, amount=Decimal("30"), currency="USD")

    balances = contact.balances()

    assert set(balances) == {"EUR", "USD"}
    assert balances["EUR"].pending == Decimal("100")
    # Paying in dollars does not settle a euro charge: it is a dollar credit.
    assert balances["USD"].pending == Decimal("-30")
    assert Contact.objects.with_balance("GBP").get(pk=contact.pk).pending == Decimal("0")


def test_a_refund_must_be_negative_and_a_payment_positive(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    with pytest.raises(ValidationError):
        record_payment(
            contact=contact, amount=Decimal("10"), currency="EUR", kind="refund", provider="manual", actor="t"
        )
    with pytest.raises(ValidationError):
        record_payment(
            contact=contact, amount=Decimal("-10"), currency="EUR", kind="invoice", provider="manual", actor="t"
        )
    with pytest.raises(ValidationError):
        record_payment(
            contact=contact, amount=Decimal("10"), currency="euro", kind="invoice", provider="bank", actor="t"
        )
    # The database holds the rule too, for writes that skip validation.
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentFactory(contact=contact, amount=Decimal("10"), kind=Payment.Kind.REFUND)


def test_a_provider_reference_records_the_money_once(workspace: Workspace) -> None:
    contact = ContactFactory(workspace=workspace)
    args = {"contact": contact, "currency": "eur", "kind": "invoice", "provider": "bank", "actor": "t"}

    first, created = record_payment(amount=Decimal("200"), provider_reference="TRF-1", **args)
    again, created_again = record_payment(amount=Decimal("200"), provider_reference="TRF-1", **args)

    assert created and not created_again and first == again
    assert first.currency == "EUR"
    assert contact.balances()["EUR"].paid == Decimal("200")
    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentFactory(contact=contact, provider="bank", provider_reference="TRF-1")


def test_a_payment_moves_an_early_contact_to_deposit_paid_but_never_back(workspace: Workspace) -> None:
    early = ContactFactory(workspace=workspace)
    late = ContactFactory(workspace=workspace, lifecycle_status="in_production")
    for contact in (early, late):
        record_payment(
            contact=contact, amount=Decimal("1"), currency="EUR", kind="deposit", provider="manual", actor="t"
        )
        contact.refresh_from_db()

    assert early.lifecycle_status == "deposit_paid"
    assert late.lifecycle_status == "in_production"


def test_stripe_minor_units_respect_zero_and_three_decimal_currencies() -> None:
    assert from_minor_units(5000000, "eur") == Decimal("50000.00")
    assert from_minor_units(5000, "JPY") == Decimal("5000")
    assert from_minor_units(1500, "KWD") == Decimal("1.500")


def test_a_plan_is_missed_when_the_last_payment_is_older_than_period_plus_grace(workspace: Workspace) -> None:
    on_time = RecurringPlanFactory(contact__workspace=workspace, started_at=datetime(2026, 1, 1, tzinfo=UTC))
    PaymentFactory(
        contact=on_time.contact, kind="subscription", amount=Decimal("50"), paid_at=datetime(2026, 5, 10, tzinfo=UTC)
    )
    late = RecurringPlanFactory(contact__workspace=workspace, started_at=datetime(2026, 1, 1, tzinfo=UTC))
    PaymentFactory(
        contact=late.contact, kind="subscription", amount=Decimal("50"), paid_at=datetime(2026, 5, 7, tzinfo=UTC)
    )
    never_paid = RecurringPlanFactory(contact__workspace=workspace, started_at=datetime(2026, 4, 1, tzinfo=UTC))
    ended = RecurringPlanFactory(
        contact__workspace=workspace,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        ended_at=datetime(2026, 2, 1, tzinfo=UTC),
    )
    yearly = RecurringPlanFactory(
        contact__workspace=workspace, interval="year", grace_days=0, started_at=datetime(2026, 1, 1, tzinfo=UTC)
    )

    with time_machine.travel(NOW, tick=False):
        missed = missed_payments(workspace=workspace)

    # 15 June minus a month minus 7 days is 8 May: paid 10 May is fine, 7 May is late.
    assert {plan.pk for plan in missed.plans} == {late.pk, never_paid.pk}
    assert ended.pk not in {plan.pk for plan in missed.plans} and yearly.pk not in {plan.pk for plan in missed.plans}
    assert next(p for p in missed.plans if p.pk == never_paid.pk).last_paid_at is None


def test_a_payment_in_another_currency_does_not_keep_a_plan_current(workspace: Workspace) -> None:
    plan = RecurringPlanFactory(
        contact__workspace=workspace, currency="EUR", started_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    PaymentFactory(contact=plan.contact, kind="subscription", currency="USD", paid_at=datetime(2026, 6, 1, tzinfo=UTC))

    with time_machine.travel(NOW, tick=False):
        assert [p.pk for p in missed_payments(workspace=workspace).plans] == [plan.pk]


def test_a_pending_balance_past_its_due_date_is_missed_oldest_charges_settled_first(workspace: Workspace) -> None:
    overdue = ContactFactory(workspace=workspace)
    ChargeFactory(contact=overdue, amount=Decimal("300"), due_on=date(2026, 5, 1))
    ChargeFactory(contact=overdue, amount=Decimal("200"), due_on=date(2026, 6, 1))
    ChargeFactory(contact=overdue, amount=Decimal("999"), due_on=date(2026, 7, 1))
    PaymentFactory(contact=overdue, amount=Decimal("350"))
    settled = ContactFactory(workspace=workspace)
    ChargeFactory(contact=settled, amount=Decimal("100"), due_on=date(2026, 5, 1))
    PaymentFactory(contact=settled, amount=Decimal("100"))
    not_due_yet = ContactFactory(workspace=workspace)
    ChargeFactory(contact=not_due_yet, amount=Decimal("100"), due_on=date(2026, 6, 15))
    agreed_only = ContactFactory(workspace=workspace)
    ChargeFactory(contact=agreed_only, amount=Decimal("100"), due_on=None)
    dollars = ChargeFactory(contact__workspace=workspace, amount=Decimal("70"), currency="USD", due_on=date(2026, 6, 1))

    with time_machine.travel(NOW, tick=False):
        balances = missed_payments(workspace=workspace).balances

    rows = {(row.contact.email, row.currency): row for row in balances}
    assert set(rows) == {(overdue.email, "EUR"), (dollars.contact.email, "USD")}
    assert rows[overdue.email, "EUR"].overdue == Decimal("150")
    assert rows[overdue.email, "EUR"].oldest_due_on == date(2026, 5, 1)


def test_missed_payments_stay_inside_the_workspace(workspace: Workspace, other_workspace: Workspace) -> None:
    RecurringPlanFactory(contact__workspace=other_workspace, started_at=datetime(2026, 1, 1, tzinfo=UTC))
    ChargeFactory(contact__workspace=other_workspace, due_on=date(2026, 1, 1))

    with time_machine.travel(NOW, tick=False):
        assert len(missed_payments(workspace=workspace)) == 0
        assert len(missed_payments(workspace=other_workspace)) == 2
