"""CSV import of contacts: create or update by email, streamed in chunks, constant memory.

A header row names the columns: `email` (required), `name`, `phone`, `company`, `source`,
`status`; `id`, `created_at` and `updated_at` are ignored (so an export imports back); any other
column, or `attributes.<key>`, becomes an attribute. Non-empty cells overwrite what is stored;
empty cells leave it alone. Bad rows are reported with their line number and skipped; good rows
are kept.

Each chunk costs one SELECT of the existing email keys, one INSERT … ON CONFLICT for new contacts
and one bulk UPDATE for changed ones: no query per row.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from django.conf import settings
from django.db import IntegrityError, connection, connections, reset_queries, transaction
from django.utils import timezone

from contacts.models import Contact, new_unsubscribe_token
from contacts.normalize import InvalidValue, clean_email, clean_phone, email_key, phone_digits
from contacts.sql import fetch_rows, text_array
from contacts.suppression import Suppression, suppression_hasher
from crm.exports import unescape_cell
from crm.models import Workspace

CORE = ("email", "name", "phone", "company", "source", "status")
IGNORED = ("id", "created_at", "updated_at")
MAX_LENGTHS = {"name": 200, "company": 200, "source": 64}
UPDATE_FIELDS = ["email", "name", "phone", "phone_digits", "company", "source", "status", "attributes", "updated_at"]
DEFAULT_CHUNK_SIZE = 5000
KEPT_ERRORS = 100
ANALYZE_AFTER = 20_000


# RFC 5322 dot-atom of ASCII characters: the local part of nearly every address in a real list.
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@functools.lru_cache(maxsize=65536)
def _clean_domain(domain: str) -> str:
    return clean_email(f"a@{domain}").rpartition("@")[2]


def clean_import_email(raw: str) -> str:
    """`clean_email`, with the same result, at a third of the cost for a plain ASCII local part.

    Full validation of every address is a third of an import's time, and a list has few domains:
    the domain is validated (and normalised) once each, the local part by the dot-atom rule.
    Anything unusual (quoted, non-ASCII, too long, invalid) goes through `clean_email` itself."""
    candidate = raw.strip()
    local, at, domain = candidate.rpartition("@")
    if at and len(local) <= 64 and DOT_ATOM.match(local):
        try:
            result = f"{local}@{_clean_domain(domain)}"
        except InvalidValue:
            result = ""
        if result and len(result) <= 254:
            return result
    return clean_email(candidate)


class ImportFailed(ValueError):
    """The file as a whole cannot be imported (no header, no email column…)."""


@dataclass
class RowError:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass
class ImportRow:
    """One valid CSV row: the email plus only the cells that were given (non-empty)."""

    email: str
    key: str
    values: dict[str, str]
    attributes: dict[str, str]


@dataclass
class ImportReport:
    dry_run: bool
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)

    def add_error(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        verb = "Would import" if self.dry_run else "Imported"
        return (
            f"{verb} {self.rows - self.error_count} of {self.rows} rows: {self.created} created, "
            f"{self.updated} updated, {self.unchanged} unchanged, {self.error_count} with errors."
        )


@dataclass
class _Columns:
    core: dict[str, int]
    attributes: list[tuple[int, str]]
    width: int


def _read_header(header: list[str]) -> _Columns:
    core: dict[str, int] = {}
    attributes: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, raw in enumerate(header):
        name = raw.strip().lstrip("\ufeff")
        lowered = name.lower()
        if not name:
            continue
        if lowered in seen:
            raise ImportFailed(f"The header names the column '{name}' twice.")
        seen.add(lowered)
        if lowered in CORE:
            core[lowered] = index
        elif lowered in IGNORED:
            continue
        else:
            attributes.append((index, name.removeprefix("attributes.")))
    if "email" not in core:
        raise ImportFailed("The header row must have an 'email' column.")
    return _Columns(core=core, attributes=attributes, width=len(header))


def _not_text(row: list[str]) -> bool:
    # The file is read with surrogateescape: undecodable bytes show up here, per row.
    joined = "".join(row)
    if "\x00" in joined:
        return True
    if joined.isascii():
        return False
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_row(row: list[str], columns: _Columns, *, line: int, phone_region: str | None) -> ImportRow | list[RowError]:
    if len(row) > columns.width:
        return [RowError(line, "row", f"has {len(row)} cells but the header has {columns.width}.")]
    if _not_text(row):
        return [RowError(line, "row", "is not valid UTF-8 text.")]
    errors: list[RowError] = []
    values: dict[str, str] = {}
    for name, index in columns.core.items():
        if index < len(row):
            cell = unescape_cell(row[index].strip())
            if cell:
                values[name] = cell
    email = ""
    try:
        email = clean_import_email(values.pop("email", ""))
    except InvalidValue as exc:
        errors.append(RowError(line, "email", str(exc)))
    if "phone" in values:
        try:
            values["phone"] = clean_phone(values["phone"], region=phone_region)
        except InvalidValue as exc:
            errors.append(RowError(line, "phone", str(exc)))
    for name, limit in MAX_LENGTHS.items():
        if len(values.get(name, "")) > limit:
            errors.append(RowError(line, name, f"has more than {limit} characters."))
    if "status" in values and values["status"] not in Contact.Status.values:
        errors.append(RowError(line, "status", f"must be one of {', '.join(Contact.Status.values)}."))
    if errors:
        return errors
    attributes = {}
    for index, key in columns.attributes:
        if index < len(row):
            cell = unescape_cell(row[index].strip())
            if cell:
                attributes[key] = cell
    return ImportRow(email=email, key=email_key(email), values=values, attributes=attributes)


# The columns an import writes; the others keep their model defaults (see _write_postgresql).
WRITTEN = [
    "email", "email_key", "email_hash", "name", "phone", "phone_digits", "company", "source", "status",
    "lifecycle_status", "attributes",
]  # fmt: skip


def _apply(current: dict[str, Any], row: ImportRow) -> bool:
    """Merge the row's given cells into `current` (an existing contact's values); True if changed."""
    changed = False
    for name, value in row.values.items():
        if name == "status" and value == Contact.Status.SUBSCRIBED:
            # An import never resubscribes someone who unsubscribed: that needs their own opt-in.
            continue
        if current[name] != value:
            current[name] = value
            changed = True
    if row.email != current["email"]:
        current["email"] = row.email
        changed = True
    if row.attributes:
        merged = {**(current["attributes"] or {}), **row.attributes}
        if merged != current["attributes"]:
            current["attributes"] = merged
            changed = True
    if changed:
        current["phone_digits"] = phone_digits(current["phone"])
    return changed


def _new_values(row: ImportRow, *, initial_status: str, email_hash: str, suppressed: bool) -> dict[str, Any]:
    phone = row.values.get("phone", "")
    status = row.values.get("status", Contact.Status.SUBSCRIBED)
    return {
        "email": row.email,
        "email_key": row.key,
        "email_hash": email_hash,
        "lifecycle_status": initial_status,
        "name": row.values.get("name", ""),
        "phone": phone,
        "phone_digits": phone_digits(phone),
        "company": row.values.get("company", ""),
        "source": row.values.get("source", Contact.Source.IMPORT),
        # Suppression wins: a list that still has someone who unsubscribed does not bring them back.
        "status": Contact.Status.UNSUBSCRIBED if suppressed else status,
        "attributes": row.attributes,
    }


def upsert_chunk(*, workspace: Workspace, rows: Iterable[ImportRow], dry_run: bool = False) -> tuple[int, int, int]:
    """Create or update one chunk of valid rows; returns (created, updated, unchanged).

    The set-based core of the import: one SELECT of the chunk's existing email keys, then one
    INSERT … ON CONFLICT DO UPDATE for new and changed contacts together (on PostgreSQL fed by
    COPY; elsewhere bulk_create + bulk_update). It has the shape of the contact API's
    `contacts.services.upsert_contacts(*, workspace, items)` so the two can share one code path."""
    by_key: dict[str, ImportRow] = {}
    for row in rows:
        earlier = by_key.get(row.key)
        if earlier is not None:  # the same person twice in one chunk: later cells win
            row = ImportRow(
                email=row.email,
                key=row.key,
                values={**earlier.values, **row.values},
                attributes={**earlier.attributes, **row.attributes},
            )
        by_key[row.key] = row
    existing = _existing(workspace, list(by_key))
    hash_of = suppression_hasher(workspace.pk)
    hashes = {key: hash_of(key) for key in by_key if key not in existing}
    initial_status = workspace.initial_status
    suppressed = Suppression.objects.hashes_in(workspace_id=workspace.pk, hashes=list(hashes.values()))
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    unchanged = 0
    for key, row in by_key.items():
        current = existing.get(key)
        if current is None:
            email_hash = hashes[key]
            suppressed_now = email_hash in suppressed
            new.append(
                _new_values(row, initial_status=initial_status, email_hash=email_hash, suppressed=suppressed_now)
            )
        elif _apply(current, row):
            changed.append(current)
        else:
            unchanged += 1
    if not dry_run and (new or changed):
        with transaction.atomic():
            if connection.vendor == "postgresql":
                _write_postgresql(workspace, new, changed)
            else:
                _write_orm(workspace, new, changed)
    return len(new), len(changed), unchanged


def _existing(workspace: Workspace, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The stored WRITTEN values (and id) of the contacts among `keys`, by email key."""
    if connection.vendor != "postgresql":
        rows = Contact.objects.filter(workspace=workspace, email_key__in=keys).values("id", *WRITTEN)
        return {values["email_key"]: values for values in rows}
    names = ["id", *WRITTEN]
    array, param = text_array(keys)
    rows = fetch_rows(
        Contact,
        [Contact._meta.get_field(name) for name in names],
        f"workspace_id = %s AND email_key = ANY({array})",
        [workspace.pk, param],
    )
    return {values["email_key"]: values for values in (dict(zip(names, row, strict=True)) for row in rows)}


def _write_orm(workspace: Workspace, new: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    now = timezone.now()
    if new:
        # ON CONFLICT: a contact created by someone else since our SELECT is updated, not an error.
        Contact.objects.bulk_create(
            [Contact(workspace=workspace, **values) for values in new],
            update_conflicts=True,
            unique_fields=["workspace", "email_key"],
            update_fields=[*UPDATE_FIELDS],
        )
    if changed:
        contacts = [Contact(workspace=workspace, updated_at=now, **values) for values in changed]
        Contact.objects.bulk_update(contacts, UPDATE_FIELDS, batch_size=1000)


def _write_postgresql(workspace: Workspace, new: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    """New contacts: COPY straight into the contact table. Changed ones (and new ones that someone
    else created since our SELECT): COPY into a temporary table, then one INSERT … SELECT … ON
    CONFLICT DO UPDATE.

    COPY moves rows in PostgreSQL's own format, several times cheaper per row than an INSERT with
    bound parameters. Columns the import does not write (and any a later migration adds) get their
    model default, computed once per chunk from an unsaved Contact."""
    meta = Contact._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    written = [quote(meta.get_field(name).column) for name in WRITTEN]
    token = quote(meta.get_field("unsubscribe_token").column)
    template = Contact(workspace=workspace)
    others = [
        field
        for field in meta.concrete_fields
        if not field.primary_key and field.name not in WRITTEN and field.name != "unsubscribe_token"
    ]
    other_columns = [quote(field.column) for field in others]
    other_values = [field.get_db_prep_save(field.pre_save(template, add=True), connection) for field in others]

    def copy_rows(cursor: Any, target: str, columns: list[str], items: list[dict[str, Any]], extra: list[Any]) -> None:
        # Django translates driver errors only around execute(); COPY needs it said explicitly.
        with connection.wrap_database_errors, cursor.copy(f"COPY {target} ({', '.join(columns)}) FROM STDIN") as copy:
            for values in items:
                copy.write_row(
                    [
                        *(json.dumps(values[name]) if name == "attributes" else values[name] for name in WRITTEN),
                        new_unsubscribe_token(),
                        *extra,
                    ]
                )

    with connection.cursor() as cursor:
        if new:
            try:
                with transaction.atomic():
                    copy_rows(cursor, table, [*written, token, *other_columns], new, other_values)
                new = []
            except IntegrityError:
                pass  # created concurrently since our SELECT: upsert these below instead
        pending = [*new, *changed]
        if not pending:
            return
        chunk_table = "trickle_import_chunk"
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {chunk_table} AS "  # noqa: S608 - names from model meta
            f"SELECT {', '.join(written)}, {token} FROM {table} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {chunk_table}")
        copy_rows(cursor, chunk_table, [*written, token], pending, [])
        updates = [quote(meta.get_field(name).column) for name in UPDATE_FIELDS]
        conflict = ", ".join(quote(meta.get_field(name).column) for name in ("workspace", "email_key"))
        cursor.execute(
            f"INSERT INTO {table} ({', '.join([*written, token, *other_columns])}) "  # noqa: S608
            f"SELECT {', '.join(written)}, {token}{''.join(', %s' for _ in others)} FROM {chunk_table} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates),
            other_values,
        )


def _records(reader: Iterator[list[str]], report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) per record; a record the csv module cannot read is an error."""
    line = 2
    while True:
        start = line
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.rows += 1
            report.add_error(RowError(start, "row", f"cannot be read as CSV: {exc}"))
            line = reader.line_num + 1  # type: ignore[attr-defined]
            continue
        line = reader.line_num + 1  # type: ignore[attr-defined]
        yield start, row


class _Writer:
    """Writes chunks one at a time, in a background thread when allowed.

    With a thread, PostgreSQL works on one chunk while this process parses the next, so the two
    CPUs of a small machine both work. The thread has its own database connection, so it is only
    used outside a transaction (in an atomic block, e.g. in tests, writes stay on the caller's
    connection). At most one chunk is being written while the next is filled: memory stays flat."""

    def __init__(self, *, workspace: Workspace, dry_run: bool, report: ImportReport, background: bool) -> None:
        self.workspace = workspace
        self.dry_run = dry_run
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=1) if background else None
        self.pending: Future[tuple[int, int, int]] | None = None
        self.created = 0
        self.next_analyze = ANALYZE_AFTER

    def _upsert(self, rows: list[ImportRow]) -> tuple[int, int, int]:
        counts = upsert_chunk(workspace=self.workspace, rows=rows, dry_run=self.dry_run)
        self.created += counts[0]
        if self.created >= self.next_analyze and connection.vendor == "postgresql" and not self.dry_run:
            # A bulk load outruns autovacuum: with statistics saying the table is small, the planner
            # answers the chunk SELECT by reading the whole workspace through the (workspace,
            # status) index (47 µs a row at 1M rows instead of 2). Refresh them each time the
            # import has doubled what it created: a handful of cheap sampled ANALYZEs in all.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(Contact._meta.db_table)}")
            self.next_analyze = self.created * 2
        # With DEBUG on, Django keeps every query's SQL (megabytes per bulk write): memory would
        # grow with the file.
        if settings.DEBUG:
            reset_queries()
        return counts

    def _collect(self, counts: tuple[int, int, int]) -> None:
        created, updated, unchanged = counts
        self.report.created += created
        self.report.updated += updated
        self.report.unchanged += unchanged

    def submit(self, rows: list[ImportRow]) -> None:
        """Write `rows`; returns once the previous chunk is done (so its counts are in the report)."""
        if self.pool is None:
            self._collect(self._upsert(rows))
            return
        if self.pending is not None:
            self._collect(self.pending.result())
        self.pending = self.pool.submit(self._upsert, rows)

    def finish(self) -> None:
        if self.pool is None:
            return
        try:
            if self.pending is not None:
                self._collect(self.pending.result())
                self.pending = None
        finally:
            self.pool.submit(connections.close_all).result()
            self.pool.shutdown()


def import_contacts(
    *,
    workspace: Workspace,
    stream: TextIO,
    dry_run: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    phone_region: str | None = None,
    on_progress: Callable[[ImportReport], Any] | None = None,
) -> ImportReport:
    """Import a CSV text stream (open it with `encoding="utf-8-sig", errors="surrogateescape",
    newline=""`). With `dry_run` nothing is written and the report says what would happen.

    Each chunk is committed on its own: an interrupted import keeps the chunks written so far, and
    running it again is safe (rows match by email)."""
    report = ImportReport(dry_run=dry_run)
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise ImportFailed("The file is empty: it needs a header row.") from exc
    except csv.Error as exc:
        raise ImportFailed(f"The header row cannot be read as CSV: {exc}") from exc
    columns = _read_header(header)
    chunk: list[ImportRow] = []
    writer = _Writer(workspace=workspace, dry_run=dry_run, report=report, background=not connection.in_atomic_block)

    def flush() -> None:
        writer.submit(list(chunk))
        chunk.clear()
        if on_progress is not None:
            on_progress(report)

    try:
        for line, row in _records(reader, report):
            if not any(cell.strip() for cell in row):
                continue
            report.rows += 1
            parsed = parse_row(row, columns, line=line, phone_region=phone_region)
            if isinstance(parsed, ImportRow):
                chunk.append(parsed)
                if len(chunk) >= chunk_size:
                    flush()
            else:
                for error in parsed:
                    report.add_error(error)
                report.error_count -= len(parsed) - 1  # count rows, not messages
        if chunk:
            flush()
    finally:
        writer.finish()
    if on_progress is not None:
        on_progress(report)
    return report
