"""Creating and updating contacts. Every contact the API (or anything else) creates is inserted by
`_insert_new` below, so rules for new contacts (such as the suppression list) live in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework import serializers

from contacts.models import Contact
from contacts.normalize import email_key
from contacts.serializers import ContactWriteSerializer
from contacts.sql import fetch_instances, pg_execute, text_array
from contacts.suppression import Suppression, suppression_hasher
from contacts.unsubscribe import resubscribe
from crm.errors import validation_error_body
from crm.models import Workspace

# A concurrent request can create one of our new emails between our read and our insert; each
# retry turns those into updates, so more than a few rounds means something else is wrong.
MAX_ATTEMPTS = 5
WRITABLE = ("email", "name", "phone", "company", "attributes", "source", "status")


@dataclass(frozen=True)
class UpsertResult:
    """The outcome for one item of a batch, in request order."""

    index: int
    status: Literal["created", "updated", "error"]
    contact: Contact | None = None
    error: dict[str, Any] | None = None


def validate_contact(
    data: Any, *, partial: bool = False, serializer: ContactWriteSerializer | None = None
) -> dict[str, Any]:
    """Validated, normalised values for one contact, or serializers.ValidationError naming the field.

    Validation keeps no state on the serializer, so one instance serves every call: building a
    serializer deep-copies its fields, which costs more than validating a contact.
    """
    serializer = serializer or (_PARTIAL_VALIDATOR if partial else _VALIDATOR)
    return dict(serializer.run_validation(data))


_VALIDATOR = ContactWriteSerializer()
_PARTIAL_VALIDATOR = ContactWriteSerializer(partial=True)


def upsert_contact(*, workspace: Workspace, data: Any, source: str = Contact.Source.API) -> tuple[Contact, bool]:
    """Create the contact with this email in the workspace, or update it. Returns (contact, created).

    Given fields overwrite; `attributes` merge key by key and a key set to null is removed.
    `source` labels a new contact unless the data names its own. Raises ValidationError and writes
    nothing when the data is invalid.
    """
    values = validate_contact(data)
    ((contact, created),) = _write(workspace=workspace, items=[values], source=source)
    return contact, created


def upsert_contacts(
    *, workspace: Workspace, items: Sequence[Any], source: str = Contact.Source.API
) -> list[UpsertResult]:
    """`upsert_contact` for many items at once, set-based: one read of the existing rows, one
    bulk insert and one bulk update. An invalid item gets an `error` result and does not stop the
    others. Items naming the same email apply in order to one contact."""
    valid: list[tuple[int, dict[str, Any]]] = []
    results: dict[int, UpsertResult] = {}
    for index, item in enumerate(items):
        try:
            valid.append((index, validate_contact(item)))
        except serializers.ValidationError as exc:
            results[index] = UpsertResult(index=index, status="error", error=validation_error_body(exc.detail)["error"])
    if valid:
        written = _write(workspace=workspace, items=[values for _, values in valid], source=source)
        for (index, _), (contact, created) in zip(valid, written, strict=True):
            results[index] = UpsertResult(index=index, status="created" if created else "updated", contact=contact)
    return [results[index] for index in range(len(items))]


def update_contact(*, contact: Contact, data: Any) -> Contact:
    """Apply a partial update (PATCH) to one known contact, with the same merge rules as upsert."""
    values = validate_contact(data, partial=True)
    resubscribing = values.pop("resubscribe", False)
    if "email" in values and email_key(values["email"]) != contact.email_key:
        taken = Contact.objects.filter(workspace_id=contact.workspace_id, email_key=email_key(values["email"]))
        if taken.exclude(pk=contact.pk).exists():
            raise serializers.ValidationError({"email": ["Another contact in this workspace has this email."]})
    changed = _apply(contact, values)
    contact.refresh_keys()
    suppressed = Suppression.objects.filter(workspace_id=contact.workspace_id, email_hash=contact.email_hash).exists()
    if suppressed and not resubscribing and contact.is_subscribed:
        contact.status = Contact.Status.UNSUBSCRIBED  # suppression wins over a PATCH
        changed.add("status")
    if changed:
        try:
            with transaction.atomic():
                contact.save(update_fields=[*changed, "updated_at"])
        except IntegrityError as exc:  # the same address was taken concurrently
            raise serializers.ValidationError({"email": ["Another contact in this workspace has this email."]}) from exc
    if resubscribing and (suppressed or not contact.is_subscribed):
        contact = resubscribe(contact=contact, source="api", actor="api")
    return contact


def _apply(contact: Contact, values: Mapping[str, Any]) -> set[str]:
    """Set the given values on the contact; return the names of fields that changed."""
    changed: set[str] = set()
    for field, value in values.items():
        if field == "attributes":
            merged = {**(contact.attributes or {}), **value}
            merged = {key: item for key, item in merged.items() if item is not None}
            if merged != contact.attributes:
                contact.attributes = merged
                changed.add(field)
        elif getattr(contact, field) != value:
            setattr(contact, field, value)
            changed.add(field)
    if "phone" in changed:
        changed.add("phone_digits")
    if "email" in changed:
        changed |= {"email_key", "email_hash"}
    return changed


def _write(*, workspace: Workspace, items: list[dict[str, Any]], source: str) -> list[tuple[Contact, bool]]:
    keys = {email_key(values["email"]) for values in items}
    resubscribing = {email_key(values["email"]) for values in items if values.pop("resubscribe", False)}
    created_keys: set[str] = set()
    with transaction.atomic():
        suppressed = _suppressed_keys(workspace=workspace, keys=keys)
        for _attempt in range(MAX_ATTEMPTS):
            by_key = {contact.email_key: contact for contact in _existing(workspace=workspace, keys=keys)}
            new: dict[str, Contact] = {}
            changed: dict[int, set[str]] = {}
            out: list[tuple[Contact, bool]] = []
            seen: set[str] = set()
            for values in items:
                key = email_key(values["email"])
                contact = by_key.get(key)
                if contact is None:
                    contact = Contact(workspace=workspace, source=source)
                    by_key[key] = new[key] = contact
                fields = _apply(contact, values)
                if key in suppressed and key not in resubscribing and contact.status != Contact.Status.UNSUBSCRIBED:
                    # Suppression wins: neither a signup call nor `"status": "subscribed"` brings an
                    # address back; only an explicit `"resubscribe": true` does.
                    contact.status = Contact.Status.UNSUBSCRIBED
                    fields.add("status")
                if key not in new and fields:
                    changed.setdefault(contact.pk, set()).update(fields)
                # Rows this call inserted in an earlier round are re-read as existing; they are still "created".
                out.append((contact, key not in seen and (key in new or key in created_keys)))
                seen.add(key)
            inserted = _insert_new(workspace=workspace, contacts=[new[key] for key in sorted(new)])
            created_keys |= inserted
            if len(inserted) < len(new):
                # Another request created some of these emails since our read: read again, and
                # apply the items to those rows as updates (applying them twice changes nothing).
                continue
            _update_changed([c for c in by_key.values() if c.pk in changed], fields=set().union(*changed.values()))
            for key in sorted(resubscribing):
                contact = by_key[key]
                if key in suppressed or not contact.is_subscribed:
                    fresh = resubscribe(contact=contact, source="api", actor="api")
                    contact.status, contact.updated_at = fresh.status, fresh.updated_at
            return out
    raise IntegrityError("Could not upsert contacts after repeated conflicting concurrent writes.")


def _suppressed_keys(*, workspace: Workspace, keys: Iterable[str]) -> set[str]:
    """The email keys among `keys` that are on the workspace's suppression list (one query)."""
    hash_of = suppression_hasher(workspace.pk)
    by_hash = {hash_of(key): key for key in keys}
    return {by_hash[h] for h in Suppression.objects.hashes_in(workspace_id=workspace.pk, hashes=list(by_hash))}


def _existing(*, workspace: Workspace, keys: Iterable[str]) -> list[Contact]:
    # Locked (PostgreSQL) and in id order: concurrent upserts of one contact merge one after the
    # other instead of losing an attribute, and never deadlock on each other.
    keys = list(keys)
    if connection.vendor == "postgresql":
        array, param = text_array(keys)
        return fetch_instances(
            Contact,
            f"workspace_id = %s AND email_key = ANY({array})",
            [workspace.pk, param],
            suffix="ORDER BY id FOR UPDATE",
        )
    return list(Contact.objects.select_for_update().filter(workspace=workspace, email_key__in=keys).order_by("pk"))


def _insert_new(*, workspace: Workspace, contacts: list[Contact]) -> set[str]:
    """The one place contacts are created (suppressed addresses will be created unsubscribed here).

    Inserts with ON CONFLICT DO NOTHING (PostgreSQL and SQLite), so a row another request created
    meanwhile is skipped instead of failing the transaction; sets the pk of each inserted contact
    and returns the email keys inserted.
    """
    if not contacts:
        return set()
    now = timezone.now()
    initial_status = workspace.initial_status
    for contact in contacts:
        contact.refresh_keys()
        contact.created_at = contact.updated_at = now
        contact.lifecycle_status = initial_status
    by_key = {contact.email_key: contact for contact in contacts}
    rows = _insert_postgresql(contacts) if connection.vendor == "postgresql" else _insert_generic(contacts)
    inserted: set[str] = set()
    for pk, key in rows:
        by_key[key].pk = pk
        by_key[key]._state.adding = False
        inserted.add(key)
    return inserted


def _insert_generic(contacts: list[Contact]) -> list[tuple[int, str]]:
    fields = [Contact._meta.get_field(name) for name in _INSERT_COLUMNS]
    rows = [
        [field.get_db_prep_save(getattr(contact, field.attname), connection) for field in fields]
        for contact in contacts
    ]
    table = connection.ops.quote_name(Contact._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    per_statement = max(1, (connection.features.max_query_params or 65535) // len(fields))
    per_statement = min(per_statement, 1000)
    out: list[tuple[int, str]] = []
    with connection.cursor() as cursor:
        for low in range(0, len(rows), per_statement):
            chunk = rows[low : low + per_statement]
            sql = (
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(chunk))} "  # noqa: S608
                "ON CONFLICT (workspace_id, email_key) DO NOTHING RETURNING id, email_key"
            )
            cursor.execute(sql, [value for row in chunk for value in row])
            out += cursor.fetchall()
    return out


def _insert_postgresql(contacts: list[Contact]) -> list[tuple[int, str]]:
    # One array per column: a fixed number of parameters, whatever the batch size.
    table = Contact._meta.db_table
    fields = [Contact._meta.get_field(name) for name in _INSERT_COLUMNS]
    columns = [field.column for field in fields]
    columns_sql = [_pg_param(_pg_kind(field), _pg_values(field, contacts)) for field in fields]
    arrays = [array for array, _ in columns_sql]
    params = [param for _, param in columns_sql]
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({', '.join(arrays)}) "  # noqa: S608
        "ON CONFLICT (workspace_id, email_key) DO NOTHING RETURNING id, email_key"
    )
    return pg_execute(sql, params, fetch=True)


# Every concrete column but the id: a field added to Contact is inserted without touching this file.
_INSERT_COLUMNS = [field.name for field in Contact._meta.concrete_fields if not field.primary_key]


def _update_changed(contacts: list[Contact], *, fields: set[str]) -> None:
    if not contacts:
        return
    now = timezone.now()
    for contact in contacts:
        contact.refresh_keys()
        contact.updated_at = now
    if connection.vendor == "postgresql":
        _update_postgresql(contacts)
    else:
        Contact.objects.bulk_update(contacts, sorted({*fields, "updated_at"}), batch_size=250)


# Django's bulk_update builds a CASE WHEN per row per field: for 1,000 rows that costs far more to
# build and plan than to run. On PostgreSQL one UPDATE … FROM unnest(arrays) with a fixed number of
# parameters does the same. Every writable column is written: the rows are locked (select_for_update)
# and hold the merged values, so writing an unchanged column loses nothing.
_PG_COLUMNS = [
    ("email", "text"),
    ("email_key", "text"),
    ("email_hash", "text"),
    ("name", "text"),
    ("phone", "text"),
    ("phone_digits", "text"),
    ("company", "text"),
    ("attributes", "jsonb"),
    ("source", "text"),
    ("status", "text"),
    ("updated_at", "timestamptz"),
]


def _update_postgresql(contacts: list[Contact]) -> None:
    table = Contact._meta.db_table
    assignments = ", ".join(f"{column} = v.{column}" for column, _ in _PG_COLUMNS)
    columns = [
        _pg_param(kind, values) for (_, kind), values in zip(_PG_COLUMNS, _pg_column_values(contacts), strict=True)
    ]
    arrays = ", ".join(["%s::bigint[]", *(array for array, _ in columns)])
    names = ", ".join(["id", *(column for column, _ in _PG_COLUMNS)])
    params = [[contact.pk for contact in contacts], *(param for _, param in columns)]
    sql = f"UPDATE {table} AS c SET {assignments} FROM unnest({arrays}) AS v({names}) WHERE c.id = v.id"  # noqa: S608
    pg_execute(sql, params, fetch=False)


def _pg_kind(field: Any) -> str:
    """The PostgreSQL element type of a column, for casting a parameter array."""
    kind = field.db_type(connection)
    return "jsonb" if kind == "jsonb" else ("bigint" if field.is_relation else kind)


def _pg_values(field: Any, contacts: list[Contact]) -> list[Any]:
    if field.get_internal_type() == "JSONField":
        return [json.dumps(getattr(contact, field.attname)) for contact in contacts]
    return [getattr(contact, field.attname) for contact in contacts]


def _pg_array(kind: str) -> str:
    return "%s::text[]::jsonb[]" if kind == "jsonb" else f"%s::{kind}[]"


def _pg_param(kind: str, values: list[Any]) -> tuple[str, Any]:
    """(array SQL, parameter) for one column. Every column travels as one joined string that
    PostgreSQL splits and casts (see contacts/sql.py): dumping a list of 1,000 values element by
    element was a third of a batch's time in Python. A column with a NULL keeps the list."""
    if kind in ("text", "jsonb") or kind.startswith("varchar"):
        return text_array(values, cast=kind)
    if all(isinstance(value, datetime) for value in values):
        return text_array([value.isoformat() for value in values], cast=kind)
    if all(type(value) is int for value in values):
        return text_array([str(value) for value in values], cast=kind)
    if all(type(value) is bool for value in values):
        return text_array(["t" if value else "f" for value in values], cast=kind)
    return _pg_array(kind), values


def _pg_column_values(contacts: list[Contact]) -> list[list[Any]]:
    return [
        [json.dumps(contact.attributes) for contact in contacts]
        if kind == "jsonb"
        else [getattr(contact, column) for contact in contacts]
        for column, kind in _PG_COLUMNS
    ]
