"""Streaming CSV export of a (filtered) contact list, in constant memory.

The columns are what `crm.imports` reads back, so export → import is a round trip: the core
fields, `created_at` (ignored on import), then one column per attribute key.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from rest_framework import serializers

from contacts.filters import ContactFilter
from contacts.models import Contact

CORE_COLUMNS = ["email", "name", "phone", "company", "source", "status"]
CHUNK_SIZE = 2000
# A leading = + - @ (or tab/CR) makes spreadsheets evaluate the cell as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


class FilterInvalid(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def filter_contacts(contacts: QuerySet[Contact], params: Mapping[str, Any]) -> QuerySet[Contact]:
    """The contact API's list filters (`email`, `status`, `source`, `search`,
    `attributes.<key>=<value>`), so an export is exactly the list a client sees."""
    filterset = ContactFilter(data=params, queryset=contacts)
    if not filterset.is_valid():
        name, messages = next(iter(filterset.errors.items()))
        raise FilterInvalid(name, " ".join(str(m) for m in messages))
    try:
        return filterset.qs
    except serializers.ValidationError as exc:
        name, messages = next(iter(exc.detail.items()))  # type: ignore[union-attr]
        raise FilterInvalid(name, str(messages[0])) from exc


def safe_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def unescape_cell(value: str) -> str:
    """Undo `safe_cell`, so an exported file imports back unchanged."""
    if len(value) > 1 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


def _attribute_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def attribute_columns(contacts: QuerySet[Contact], *, chunk_size: int = CHUNK_SIZE) -> list[str]:
    # The header has to be known before the first row, so one streamed pass over the attributes.
    keys: set[str] = set()
    for attributes in contacts.values_list("attributes", flat=True).iterator(chunk_size=chunk_size):
        if attributes:
            keys.update(attributes)
    return sorted(keys)


def csv_rows(contacts: QuerySet[Contact], *, chunk_size: int = CHUNK_SIZE) -> Iterator[list[str]]:
    """The header, then one row per contact; reads `chunk_size` contacts at a time."""
    contacts = contacts.order_by("id")
    keys = attribute_columns(contacts, chunk_size=chunk_size)
    taken = {*CORE_COLUMNS, "created_at", "id", "updated_at"}
    yield [*CORE_COLUMNS, "created_at", *(f"attributes.{k}" if k.lower() in taken else k for k in keys)]
    fields = [*CORE_COLUMNS, "created_at", "attributes"]
    for row in contacts.values_list(*fields).iterator(chunk_size=chunk_size):
        *core, created_at, attributes = row
        attributes = attributes or {}
        cells = [*core, created_at.isoformat(), *(_attribute_text(attributes.get(k)) for k in keys)]
        yield [safe_cell(str(cell)) for cell in cells]


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(contacts: QuerySet[Contact], *, chunk_size: int = CHUNK_SIZE) -> Iterator[str]:
    writer = csv.writer(_Echo())
    for row in csv_rows(contacts, chunk_size=chunk_size):
        yield writer.writerow(row)


def write_csv(contacts: QuerySet[Contact], out: TextIO, *, chunk_size: int = CHUNK_SIZE) -> int:
    """Write the CSV to a file; returns the number of contacts written."""
    writer = csv.writer(out)
    count = -1
    for count, row in enumerate(csv_rows(contacts, chunk_size=chunk_size)):  # noqa: B007
        writer.writerow(row)
    return max(count, 0)


def _batched(lines: Iterable[str], size: int = 200) -> Iterator[str]:
    # One write per line would mean one tiny socket write per contact.
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def streaming_response(contacts: QuerySet[Contact], *, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_batched(csv_lines(contacts)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
