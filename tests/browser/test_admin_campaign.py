"""The campaign admin as an operator uses it, in headless Chromium against a live server."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.models import Campaign
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.factories import ContactFactory, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.django_db(transaction=True)]


def test_an_operator_sees_the_live_match_count_and_template_errors_before_saving(live_server: Any) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    workspace = WorkspaceFactory(slug="acme", name="Acme")
    WorkspaceFactory(slug="other", name="Other")
    ContactFactory.create_batch(3, workspace=workspace, attributes={"language": "en"})
    ContactFactory(workspace=workspace, attributes={"language": "fr"})
    user = UserFactory(username="operator", is_superuser=False)
    MembershipFactory(user=user, workspace=workspace)
    from django.contrib.auth.models import Permission

    user.user_permissions.set(Permission.objects.filter(content_type__app_label="campaigns"))

    # Database work stays outside the Playwright block: its event loop makes Django refuse queries.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/admin/login/?next=/admin/campaigns/campaign/add/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "correct horse battery")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/campaigns/campaign/add/")
            workspaces = page.locator("#id_workspace option").all_inner_texts()
            page.select_option("#id_workspace", label="Acme")
            page.fill("#id_name", "Welcome")
            page.fill("#id_contact_filter", "language=en")
            page.wait_for_function("document.getElementById('match-count').textContent.includes('3 contacts')")
            live_count = page.locator("#match-count").inner_text()
            page.fill("#id_contact_filter", "language = = en")
            page.wait_for_function("document.getElementById('match-count').textContent.includes('position')")
            live_error = page.locator("#match-count").inner_text()
            page.fill("#id_contact_filter", "language=en")
            page.click("#messages-group .add-row a")
            page.fill("#id_messages-0-subject", "Hello {{nmae}}")
            page.fill("#id_messages-0-html_body", "<p>Hi {{#if name}}{{name}}{{else}}there{{/if}}</p>")
            page.click("input[name=_save]")
            page.wait_for_load_state()
            error_text = page.locator(".errorlist").all_inner_texts()
            page.fill("#id_messages-0-subject", "Hello {{#if name}}{{name}}{{else}}there{{/if}}")
            page.click("input[name=_save]")
            page.wait_for_url("**/admin/campaigns/campaign/")
            listing = page.locator("#result_list").inner_text()
        finally:
            browser.close()

    assert "Other" not in " ".join(workspaces)
    assert live_count.startswith("3 contacts match")
    assert "position" in live_error
    assert any("line 1" in e and "nmae" in e for e in error_text)
    assert "Welcome" in listing
    campaign = Campaign.objects.get()
    assert campaign.workspace == workspace
    assert campaign.messages.get().subject.startswith("Hello")
