from __future__ import annotations

import threading

import pytest
from django.db import connection

from contacts import services
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import WorkspaceFactory

THREADS = 6
EMAILS = [f"person{n}@example.com" for n in range(40)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_the_same_emails_create_each_contact_once_and_lose_no_attribute() -> None:
    workspace: Workspace = WorkspaceFactory(slug="race")
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def upsert(thread: int) -> None:
        try:
            # Each thread names the emails in its own order and sets its own attribute.
            emails = EMAILS[thread:] + EMAILS[:thread]
            items = [
                {"email": email.upper() if thread % 2 else email, "attributes": {f"t{thread}": thread}}
                for email in emails
            ]
            barrier.wait(timeout=10)
            results = services.upsert_contacts(workspace=workspace, items=items)
            assert all(result.status in ("created", "updated") for result in results)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=upsert, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures, failures
    contacts = list(Contact.objects.filter(workspace=workspace))
    assert sorted(contact.email_key for contact in contacts) == sorted(EMAILS)
    expected = {f"t{n}": n for n in range(THREADS)}
    assert all(contact.attributes == expected for contact in contacts)
