"""The unsubscribe link as a person uses it: headless Chromium against a live server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from campaigns.services import send_deliveries
from contacts.models import Contact
from contacts.suppression import Suppression, is_suppressed
from crm.models import Workspace
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.factories import (
    CampaignFactory,
    ContactFactory,
    DeliveryFactory,
    EnrollmentFactory,
    MessageFactory,
    WorkspaceFactory,
)

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
]


def link_in_email(email: Any) -> str:
    html = next(p for p in email.walk() if p.get_content_type() == "text/html").get_content()
    match = re.search(r'href="([^"]+/u/[^"]+/)"', html)
    assert match, html
    return match.group(1)


@pytest.mark.django_db(transaction=True)
def test_a_person_unsubscribes_with_one_button_on_a_phone(live_server: Any, moto_ses: Any, settings: Any) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    settings.SITE_URL = live_server.url
    moto_ses.verify("acme.test")
    workspace = WorkspaceFactory(slug="acme", name="Acme Coffee")
    contact = ContactFactory(workspace=workspace, email="ana.lopez@example.com")
    # A real email, sent through the engine to moto's SES: the link a person clicks comes from it.
    message = MessageFactory(campaign=CampaignFactory(workspace=workspace), send_day=0)
    delivery = DeliveryFactory(
        enrollment=EnrollmentFactory(campaign=message.campaign, contact=contact), message=message
    )
    send_deliveries(delivery_ids=[delivery.pk])
    [email] = moto_ses.emails()
    link = link_in_email(email)
    assert email["List-Unsubscribe"].strip() == f"<{link}>"
    screenshot = Path(django_settings.VAR_DIR) / "unsubscribe-phone.png"

    # All database checks happen outside the Playwright block: its event loop would make Django
    # refuse synchronous queries.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
            page.goto(link)
            heading = page.get_by_role("heading", level=1).inner_text()
            masked = page.locator(".address").inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
            page.get_by_role("button", name="Unsubscribe").click()
            page.wait_for_load_state()
            done = page.get_by_role("heading", level=1).inner_text()
            done_text = page.locator("main").inner_text()
            page.screenshot(path=str(screenshot.with_name("unsubscribe-phone-done.png")), full_page=True)
        finally:
            browser.close()

    assert heading == "Unsubscribe from Acme Coffee?"
    assert masked == "a***@example.com"
    assert done == "You are unsubscribed"
    assert "a***@example.com" in done_text
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert is_suppressed(Workspace.objects.get(pk=workspace.pk), "ana.lopez@example.com")
    assert Suppression.objects.get().source == "unsubscribe-page"
