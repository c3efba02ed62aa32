from __future__ import annotations

import pytest
from django.test import Client

from campaigns.models import Delivery
from contacts.models import Contact
from contacts.public_views import mask_email
from contacts.suppression import Suppression, is_suppressed
from crm.models import Workspace
from tests.factories import ContactFactory, DeliveryFactory

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def browser() -> Client:
    # Enforce CSRF as a real browser session would see it.
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def contact(workspace: Workspace) -> Contact:
    return ContactFactory(workspace=workspace, email="ana@example.com")


def url(contact_or_token: Contact | str) -> str:
    token = contact_or_token if isinstance(contact_or_token, str) else contact_or_token.unsubscribe_token
    return f"/u/{token}/"


def one_click(token: str) -> object:
    # What Gmail sends: no cookies, no CSRF token, a form-encoded body.
    return Client(enforce_csrf_checks=True).post(
        f"/u/{token}/", data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )


def test_get_shows_a_confirmation_page_and_never_unsubscribes(browser: Client, contact: Contact) -> None:
    for _ in range(3):
        response = browser.get(url(contact))
        assert response.status_code == 200
    html = response.content.decode()
    assert "Acme" in html
    assert "a***@example.com" in html
    assert "ana@example.com" not in html
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html
    assert html.count("<button") == 1
    contact.refresh_from_db()
    assert contact.status == Contact.Status.SUBSCRIBED
    assert not Suppression.objects.exists()


def test_head_never_unsubscribes(browser: Client, contact: Contact) -> None:
    assert browser.head(url(contact)).status_code == 200
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_the_form_unsubscribes_and_shows_the_done_page(browser: Client, contact: Contact) -> None:
    browser.get(url(contact))
    token = browser.cookies["csrftoken"].value

    response = browser.post(url(contact), {"csrfmiddlewaretoken": token, "confirm": "yes"})

    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert Suppression.objects.get().source == "unsubscribe-page"


def test_a_form_post_without_csrf_token_changes_nothing(browser: Client, contact: Contact) -> None:
    response = browser.post(url(contact), {"confirm": "yes"})
    assert response.status_code == 403
    assert "press the button again" in response.content.decode()
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert not Suppression.objects.exists()


def test_one_click_post_unsubscribes_with_200_and_no_redirect(contact: Contact) -> None:
    response = one_click(contact.unsubscribe_token)
    assert response.status_code == 200
    assert "Location" not in response
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert is_suppressed(contact.workspace, "ana@example.com")
    assert Suppression.objects.get().source == "one-click"


def test_one_click_as_multipart_also_works(contact: Contact) -> None:
    response = Client(enforce_csrf_checks=True).post(url(contact), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_a_second_one_click_is_a_200(contact: Contact) -> None:
    token = contact.unsubscribe_token
    assert one_click(token).status_code == 200
    second = one_click(token)
    assert second.status_code == 200
    assert "already unsubscribed" in second.content.decode()
    assert Suppression.objects.count() == 1


def test_a_used_token_shows_the_unsubscribed_page_after_the_contact_is_deleted(
    browser: Client, contact: Contact
) -> None:
    token = contact.unsubscribe_token
    one_click(token)
    assert not Contact.objects.filter(pk=contact.pk).exists()

    response = browser.get(url(token))

    assert response.status_code == 200
    html = response.content.decode()
    assert "You are unsubscribed" in html
    assert "Acme" in html


def test_form_and_one_click_are_idempotent_when_the_contact_is_kept(workspace: Workspace, contact: Contact) -> None:
    workspace.unsubscribe_behaviour = Workspace.UnsubscribeBehaviour.KEEP
    workspace.save()
    browser = Client(enforce_csrf_checks=True)
    browser.get(url(contact))
    csrf = browser.cookies["csrftoken"].value

    assert browser.post(url(contact), {"csrfmiddlewaretoken": csrf}).status_code == 200
    assert browser.post(url(contact), {"csrfmiddlewaretoken": csrf}).status_code == 200
    assert one_click(contact.unsubscribe_token).status_code == 200
    page = browser.get(url(contact))

    assert "already unsubscribed" in page.content.decode()
    contact.refresh_from_db()
    assert contact.status == Contact.Status.UNSUBSCRIBED
    assert Suppression.objects.count() == 1


def test_queued_deliveries_are_skipped_after_a_one_click(workspace: Workspace) -> None:
    delivery = DeliveryFactory(enrollment__campaign__workspace=workspace)
    one_click(delivery.contact.unsubscribe_token)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SKIPPED


@pytest.mark.parametrize(
    "token",
    [
        "x" * 43,
        "short",
        "a" * 65,
        "not-a-token%20with%20spaces",
        "%F0%9F%92%A9" * 8,
        "..%2F..%2Fetc%2Fpasswd",
        "%00" + "a" * 40,
        "a" * 20 + "/extra",
    ],
)
def test_unknown_or_malformed_tokens_get_a_friendly_404(browser: Client, contact: Contact, token: str) -> None:
    for response in (browser.get(f"/u/{token}/"), one_click(token)):
        assert response.status_code == 404
        html = response.content.decode()
        assert "not recognised" in html
        assert "Traceback" not in html
        assert "Acme" not in html
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_hostile_bodies_never_cause_a_500(contact: Contact) -> None:
    client = Client(enforce_csrf_checks=True)
    huge = client.post(url(contact), data="A" * 200_000, content_type="application/x-www-form-urlencoded")
    assert huge.status_code == 413
    bad_bytes = client.post(url(contact), data=b"\xff\xfe\x00List-Unsubscribe=\xc3", content_type="text/plain")
    assert bad_bytes.status_code == 403
    bad_multipart = client.post(url(contact), data=b"--x\r\nbroken", content_type="multipart/form-data; boundary=x")
    assert bad_multipart.status_code == 403
    many_fields = client.post(
        url(contact), data="&".join(f"f{i}=1" for i in range(1500)), content_type="application/x-www-form-urlencoded"
    )
    assert many_fields.status_code == 403
    assert client.put(url(contact)).status_code == 405
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_masking_shows_only_the_first_letter() -> None:
    assert mask_email("ana@example.com") == "a***@example.com"
    assert mask_email("x") == "***"


def test_one_click_works_without_the_trailing_slash(contact: Contact) -> None:
    response = Client(enforce_csrf_checks=True).post(
        f"/u/{contact.unsubscribe_token}", data=ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert not Contact.objects.filter(pk=contact.pk).exists()
