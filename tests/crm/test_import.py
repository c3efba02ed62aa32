from __future__ import annotations

import io
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact
from contacts.normalize import InvalidValue, clean_email
from contacts.suppression import suppression_hash
from crm import imports
from crm.imports import ImportFailed, clean_import_email, import_contacts
from crm.models import Workspace
from tests.factories import ContactFactory, MembershipFactory, UserFactory, WorkspaceFactory

pytestmark = pytest.mark.django_db


def run(workspace: Workspace, text: str, **kwargs: object) -> object:
    return import_contacts(workspace=workspace, stream=io.StringIO(text), **kwargs)


MALFORMED = (
    "email,name,phone,plan\n"
    "ana@example.com,Ana,+35699123456,pro\n"  # line 2: good
    "not-an-address,Bad,,\n"  # line 3: bad email
    "bo@example.com,Bo,12,\n"  # line 4: bad phone
    '"cy@example.com","Cy\nSecond line",,basic\n'  # lines 5-6: good, a quoted newline
    "dee@example.com,Dee,,x,extra\n"  # line 7: too many cells
    ",,,\n"  # line 8: blank, skipped
    "eve@example.com\n"  # line 9: good, short row
)


def test_bad_rows_are_reported_with_line_numbers_and_good_rows_kept(workspace: Workspace) -> None:
    report = run(workspace, MALFORMED)

    assert [(e.line, e.field) for e in report.errors] == [(3, "email"), (4, "phone"), (7, "row")]
    assert (report.rows, report.created, report.error_count) == (6, 3, 3)
    assert set(Contact.objects.values_list("email", flat=True)) == {
        "ana@example.com",
        "cy@example.com",
        "eve@example.com",
    }
    ana = Contact.objects.get(email="ana@example.com")
    assert (ana.name, ana.phone, ana.source, ana.attributes) == ("Ana", "+35699123456", "import", {"plan": "pro"})


def test_a_dry_run_counts_but_writes_nothing(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com", name="Old")

    report = run(workspace, MALFORMED, dry_run=True)

    assert (report.created, report.updated, report.error_count) == (2, 1, 3)
    assert report.summary().startswith("Would import 3 of 6 rows")
    assert list(Contact.objects.values_list("email", "name")) == [("ana@example.com", "Old")]


def test_given_cells_overwrite_and_empty_cells_leave_values_alone(workspace: Workspace) -> None:
    ContactFactory(
        workspace=workspace,
        email="Ana@example.com",
        name="Ana",
        company="Old Co",
        attributes={"plan": "basic", "a": "1"},
    )

    report = run(workspace, "EMAIL,Name,Company,plan\nana@EXAMPLE.com,,New Co,pro\n")

    contact = Contact.objects.get()
    assert (report.created, report.updated) == (0, 1)
    assert (contact.name, contact.company) == ("Ana", "New Co")
    assert contact.attributes == {"plan": "pro", "a": "1"}


def test_an_import_never_resubscribes_an_unsubscribed_contact(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="ana@example.com", status=Contact.Status.UNSUBSCRIBED)

    run(workspace, "email,status\nana@example.com,subscribed\nbo@example.com,unsubscribed\n")

    assert dict(Contact.objects.values_list("email", "status")) == {
        "ana@example.com": "unsubscribed",
        "bo@example.com": "unsubscribed",
    }


def test_the_same_address_twice_in_one_file_is_one_contact(workspace: Workspace) -> None:
    report = run(workspace, "email,name,city\nana@example.com,Ana,\nANA@example.com,,Valletta\n", chunk_size=10)

    contact = Contact.objects.get()
    assert (contact.name, contact.attributes) == ("Ana", {"city": "Valletta"})
    assert report.created == 1


def test_each_chunk_costs_a_constant_number_of_queries(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="p0@example.com")
    rows = "".join(f"p{i}@example.com,Person {i}\n" for i in range(500))

    with CaptureQueriesContext(connection) as queries:
        report = run(workspace, "email,name\n" + rows, chunk_size=250)

    assert (report.created, report.updated) == (499, 1)
    # Per chunk: one SELECT of existing keys and one of suppressed hashes, then bulk writes (SQLite
    # splits an INSERT at its parameter limit, so a few of those): nowhere near one query per row.
    selects = [q for q in queries if q["sql"].startswith("SELECT")]
    assert len(selects) == 4
    assert len(queries) < 25


def test_it_reports_undecodable_bytes_per_row(tmp_path: Path, workspace: Workspace) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"email,name\nana@example.com,Ana\nbo@example.com,B\xff\xfeo\ncy@example.com,Cy\n")
    err = StringIO()

    call_command("import_contacts", str(path), workspace="acme", stdout=StringIO(), stderr=err)

    assert "line 3: row: is not valid UTF-8 text." in err.getvalue()
    assert Contact.objects.count() == 2


def test_a_file_without_an_email_column_is_refused(workspace: Workspace) -> None:
    with pytest.raises(ImportFailed, match="email"):
        run(workspace, "name,phone\nAna,+35699123456\n")


def test_the_command_prints_a_summary_and_honours_dry_run(tmp_path: Path, workspace: Workspace) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(MALFORMED, encoding="utf-8")
    out, err = StringIO(), StringIO()

    call_command("import_contacts", str(path), workspace="acme", dry_run=True, stdout=out, stderr=err)
    assert not Contact.objects.exists()
    call_command("import_contacts", str(path), workspace="acme", stdout=out, stderr=err)

    assert "Would import 3 of 6 rows" in out.getvalue()
    assert "Imported 3 of 6 rows: 3 created" in out.getvalue()
    assert "line 3: email:" in err.getvalue()
    assert Contact.objects.count() == 3


def test_the_command_rejects_an_unknown_workspace(tmp_path: Path, db: None) -> None:
    path = tmp_path / "c.csv"
    path.write_text("email\n", encoding="utf-8")
    with pytest.raises(CommandError, match="No workspace"):
        call_command("import_contacts", str(path), workspace="missing")


def test_an_import_touches_only_its_workspace(workspace: Workspace, other_workspace: Workspace) -> None:
    theirs = ContactFactory(workspace=other_workspace, email="ana@example.com", name="Theirs")

    run(workspace, "email,name\nana@example.com,Ours\n")

    theirs.refresh_from_db()
    assert theirs.name == "Theirs"
    assert Contact.objects.get(workspace=workspace).name == "Ours"


def _admin_client(workspace: Workspace) -> Client:
    user = UserFactory()
    MembershipFactory(user=user, workspace=workspace)
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_page_previews_then_imports(workspace: Workspace) -> None:
    client = _admin_client(workspace)
    url = "/admin/contacts/contact/import-csv/"
    payload = MALFORMED.encode()

    preview = client.post(url, {"workspace": workspace.pk, "dry_run": "on", "file": _upload(payload)})
    assert preview.status_code == 200
    assert "Would import 3 of 6 rows" in preview.content.decode()
    assert not Contact.objects.exists()

    done = client.post(url, {"workspace": workspace.pk, "file": _upload(payload)})
    assert "Imported 3 of 6 rows" in done.content.decode()
    assert "<td>3</td><td>email</td>" in done.content.decode()
    assert Contact.objects.filter(workspace=workspace).count() == 3


def test_the_admin_page_refuses_a_workspace_the_user_is_not_in(
    workspace: Workspace, other_workspace: Workspace
) -> None:
    client = _admin_client(workspace)

    response = client.post(
        "/admin/contacts/contact/import-csv/",
        {"workspace": other_workspace.pk, "file": _upload(b"email\na@example.com\n")},
    )

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Contact.objects.exists()


def _upload(content: bytes) -> object:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("contacts.csv", content, content_type="text/csv")


@pytest.mark.parametrize(
    "raw",
    [
        "ana@example.com",
        " Ana.Maria+tag@Example.COM ",
        "o'brien@example.ie",
        "x@b\u00fccher.example",
        "\u00e1na@example.com",
        '"quoted local"@example.com',
        "ana..maria@example.com",
        ".ana@example.com",
        "ana@localhost",
        "ana@example.test",
        "ana@-bad-.com",
        "a@b@example.com",
        "ana@",
        "@example.com",
        "",
        "a" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60 + ".com",
    ],
)
def test_the_import_fast_path_agrees_with_clean_email(raw: str) -> None:
    try:
        expected: object = clean_email(raw)
    except InvalidValue as exc:
        expected = ("invalid", str(exc))
    try:
        got: object = clean_import_email(raw)
    except InvalidValue as exc:
        got = ("invalid", str(exc))

    assert got == expected


def test_a_contact_created_by_someone_else_mid_import_is_updated_not_an_error(workspace: Workspace) -> None:
    # Between the chunk's SELECT and its write another request created the same address: the
    # write must fall back to an upsert rather than fail the chunk.
    ContactFactory(workspace=workspace, email="ana@example.com", name="Raced")
    row = imports.ImportRow(email="ana@example.com", key="ana@example.com", values={"name": "Ana"}, attributes={})
    fresh = imports._new_values(
        row,
        initial_status=workspace.initial_status,
        email_hash=suppression_hash(workspace.pk, "ana@example.com"),
        suppressed=False,
    )

    if connection.vendor == "postgresql":
        imports._write_postgresql(workspace, [fresh], [])
    else:
        imports._write_orm(workspace, [fresh], [])

    assert list(Contact.objects.values_list("email", "name")) == [("ana@example.com", "Ana")]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_chunks_are_written_in_the_background_with_the_same_result() -> None:
    # Not in an atomic block, so the writer thread (with its own connection) is used.
    workspace = WorkspaceFactory(slug="bulk")
    ContactFactory(workspace=workspace, email="p3@example.com", name="Old", attributes={"x": "1"})
    rows = "".join(f"p{i}@example.com,Person {i},{'bad' if i == 7 else ''}\n" for i in range(20))
    seen: list[int] = []

    report = import_contacts(
        workspace=workspace,
        stream=io.StringIO("email,name,phone\n" + rows),
        chunk_size=3,
        on_progress=lambda r: seen.append(r.created + r.updated),
    )

    assert (report.rows, report.created, report.updated, report.error_count) == (20, 18, 1, 1)
    assert report.errors[0].line == 9
    assert Contact.objects.filter(workspace=workspace).count() == 19
    assert Contact.objects.get(email="p3@example.com").attributes == {"x": "1"}
    assert seen[-1] == 19 and seen == sorted(seen)


@pytest.mark.django_db(transaction=True)
def test_an_imported_address_on_the_suppression_list_comes_in_unsubscribed(workspace: Workspace) -> None:
    from contacts.suppression import is_suppressed
    from contacts.unsubscribe import unsubscribe

    unsubscribe(contact=ContactFactory(workspace=workspace, email="gone@example.com"), source="test")

    run(workspace, "email,name\ngone@example.com,Gone\nnew@example.com,New\n")

    gone, new = Contact.objects.get(email_key="gone@example.com"), Contact.objects.get(email_key="new@example.com")
    assert (gone.status, new.status) == ("unsubscribed", "subscribed")
    # The imported rows carry the keyed hash, so the engine's anti-join finds them.
    assert is_suppressed(workspace, gone.email) and gone.email_hash
    assert Contact.objects.filter(workspace=workspace).suppressed().get() == gone
    assert new.lifecycle_status == workspace.initial_status
