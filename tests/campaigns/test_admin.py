"""The campaign admin: scoped to the operator's workspaces, counts, live match count, the ledger."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from campaigns.models import Campaign, Delivery
from crm.models import Workspace
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    DeliveryFactory,
    MembershipFactory,
    MessageFactory,
    UserFactory,
    WorkspaceFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(workspace: Workspace) -> Client:
    user = UserFactory(username="op", email="op@acme.test", is_superuser=True)
    MembershipFactory(user=user, workspace=workspace)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(workspace: Workspace) -> Client:
    from django.contrib.auth.models import Permission

    user = UserFactory(username="staff", is_superuser=False)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="campaigns"))
    MembershipFactory(user=user, workspace=workspace)
    client = Client()
    client.force_login(user)
    return client


def test_staff_see_only_their_workspaces_campaigns_and_deliveries(staff: Client, workspace: Workspace) -> None:
    mine = DeliveryFactory(enrollment__campaign=CampaignFactory(workspace=workspace, name="Mine"))
    theirs = DeliveryFactory(enrollment__campaign=CampaignFactory(workspace=WorkspaceFactory(), name="Theirs"))

    listing = staff.get("/admin/campaigns/campaign/").content.decode()

    assert "Mine" in listing and "Theirs" not in listing
    assert staff.get(f"/admin/campaigns/campaign/{theirs.campaign_id}/change/").status_code in (302, 404)
    assert staff.get(f"/admin/campaigns/delivery/{mine.pk}/change/").status_code == 200
    assert staff.get(f"/admin/campaigns/delivery/{theirs.pk}/change/").status_code in (302, 404)


def test_the_campaign_list_counts_the_ledger_without_test_sends(operator: Client, workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace)
    message = MessageFactory(campaign=campaign)
    for status in ("sent", "sent", "failed", "unknown"):
        DeliveryFactory(enrollment__campaign=campaign, message=message, status=status)
    Delivery.objects.create(campaign=campaign, message=message, is_test=True, to_email="me@x.test", status="sent")

    row = operator.get("/admin/campaigns/campaign/").context["cl"].result_list[0]

    assert (row.n_enrolled_, row.n_sent_, row.n_failed_, row.n_unknown_) == (4, 2, 1, 1)


def test_the_live_match_count_answers_for_a_filter_and_names_an_error(operator: Client, workspace: Workspace) -> None:
    ContactFactory.create_batch(2, workspace=workspace, attributes={"language": "en"})
    ContactFactory(workspace=workspace, attributes={"language": "fr"})
    url = "/admin/campaigns/campaign/match-count/"

    good = operator.get(url, {"workspace": workspace.pk, "filter": "language=en"})
    bad = operator.get(url, {"workspace": workspace.pk, "filter": "language = = en"})
    none = operator.get(url, {"filter": "language=en"})

    assert good.json() == {"matching": 2, "subscribed": 2}
    assert bad.status_code == 400 and "position" in bad.json()["error"]
    assert none.status_code == 400


def test_staff_cannot_count_another_workspaces_contacts(staff: Client) -> None:
    other = WorkspaceFactory()
    ContactFactory(workspace=other)

    response = staff.get("/admin/campaigns/campaign/match-count/", {"workspace": other.pk, "filter": ""})

    assert response.status_code == 400


def test_a_delivery_page_shows_the_email_as_rendered_and_the_ledger_is_read_only(
    operator: Client, workspace: Workspace
) -> None:
    contact = ContactFactory(workspace=workspace, name="Ana")
    delivery = DeliveryFactory(enrollment__campaign=CampaignFactory(workspace=workspace), enrollment__contact=contact)

    page = operator.get(f"/admin/campaigns/delivery/{delivery.pk}/change/").content.decode()

    assert "Hi Ana, this is day 0." in page  # inside the escaped srcdoc of the preview frame
    assert contact.unsubscribe_token in page
    assert operator.post(f"/admin/campaigns/delivery/{delivery.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Delivery.objects.filter(pk=delivery.pk).exists()


def test_pause_and_activate_actions(operator: Client, workspace: Workspace) -> None:
    campaign = CampaignFactory(workspace=workspace, active=True)
    Campaign.objects.filter(pk=campaign.pk).update(paused_reason="complaint rate 0.5%")

    operator.post("/admin/campaigns/campaign/", {"action": "pause", "_selected_action": [campaign.pk]})
    assert not Campaign.objects.get(pk=campaign.pk).active
    operator.post("/admin/campaigns/campaign/", {"action": "activate", "_selected_action": [campaign.pk]})

    campaign.refresh_from_db()
    assert campaign.active and campaign.paused_reason == ""


def test_send_a_test_to_me_goes_to_the_operator_and_is_not_counted(
    operator: Client, workspace: Workspace, moto_ses: Any, django_capture_on_commit_callbacks: Any
) -> None:
    moto_ses.verify("acme.test")
    campaign = CampaignFactory(workspace=workspace)
    MessageFactory(campaign=campaign, send_day=0)
    MessageFactory(campaign=campaign, send_day=2)

    with django_capture_on_commit_callbacks(execute=True):
        operator.post("/admin/campaigns/campaign/", {"action": "send_test_to_me", "_selected_action": [campaign.pk]})

    assert sorted(e["To"] for e in moto_ses.emails()) == ["op@acme.test", "op@acme.test"]
    assert campaign.deliveries.counted().count() == 0
