from __future__ import annotations

from datetime import time
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from campaigns.models import Campaign, Delivery, Enrollment, Message
from contacts.models import Contact
from crm.models import Charge, Membership, Payment, RecurringPlan, Workspace


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"ws-{n}")
    time_zone = "UTC"
    default_from_email = "hello@acme.test"
    default_from_name = "Acme"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@staff.test")
    is_staff = True
    password = factory.django.Password("correct horse battery")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    workspace = factory.SubFactory(WorkspaceFactory)
    email = factory.Sequence(lambda n: f"person{n}@example.com")
    name = factory.Faker("name")
    attributes = factory.LazyFunction(lambda: {"language": "en"})


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    workspace = factory.SubFactory(WorkspaceFactory)
    name = factory.Sequence(lambda n: f"Welcome {n}")
    contact_filter = "language=en"
    active = True
    send_time = time(10, 0)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    campaign = factory.SubFactory(CampaignFactory)
    send_day = 0
    subject = factory.LazyAttribute(lambda m: f"Day {m.send_day}: hello {{{{name}}}}")
    html_body = factory.LazyAttribute(
        lambda m: f"<p>Hi {{{{#if name}}}}{{{{name}}}}{{{{else}}}}there{{{{/if}}}}, this is day {m.send_day}.</p>"
    )


class EnrollmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Enrollment

    campaign = factory.SubFactory(CampaignFactory)
    contact = factory.SubFactory(ContactFactory, workspace=factory.SelfAttribute("..campaign.workspace"))
    enrolled_at = factory.LazyFunction(timezone.now)
    enrolled_on = factory.LazyAttribute(lambda e: e.enrolled_at.date())


class DeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Delivery

    enrollment = factory.SubFactory(EnrollmentFactory)
    campaign = factory.SelfAttribute("enrollment.campaign")
    contact = factory.SelfAttribute("enrollment.contact")
    message = factory.SubFactory(MessageFactory, campaign=factory.SelfAttribute("..enrollment.campaign"))
    to_email = factory.LazyAttribute(lambda d: d.contact.email if d.contact else "")
    status = Delivery.Status.QUEUED
    scheduled_on = factory.SelfAttribute("enrollment.enrolled_on")


class PaymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payment

    contact = factory.SubFactory(ContactFactory)
    workspace = factory.LazyAttribute(lambda p: p.contact.workspace)
    amount = Decimal("100.00")
    currency = "EUR"
    kind = Payment.Kind.INVOICE
    provider = "manual"


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge

    contact = factory.SubFactory(ContactFactory)
    workspace = factory.LazyAttribute(lambda c: c.contact.workspace)
    amount = Decimal("1000.00")
    currency = "EUR"


class RecurringPlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RecurringPlan

    contact = factory.SubFactory(ContactFactory)
    workspace = factory.LazyAttribute(lambda p: p.contact.workspace)
    amount = Decimal("50.00")
    currency = "EUR"
    interval = RecurringPlan.Interval.MONTH
    grace_days = 7


class FormFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "crm.Form"

    workspace = factory.SubFactory(WorkspaceFactory)
    name = "Pricing wizard"
    slug = factory.Sequence(lambda n: f"pricing_wizard_{n}")
    allowed_origins = "https://www.acme.example"
    consent_text = "Yes, email me about new plans. Unsubscribe any time."
