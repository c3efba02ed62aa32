"""PostgreSQL statements with server-side parameter binding, for the bulk paths.

Django's psycopg cursors bind on the client: every value of a 5,000-key `IN (…)` or of an array
parameter is quoted into the SQL text in Python, and PostgreSQL then parses that text. For the
import and the batch upsert that was a tenth of the time of a chunk. Here the values travel as
one array parameter (`= ANY(%s)`), bound by the server.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


def pg_execute(sql: str, params: list[Any], *, fetch: bool) -> list[Any]:
    """Run one statement on Django's connection (and transaction), server-side bound."""
    import psycopg

    connection.ensure_connection()
    started = time.monotonic()
    try:
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else []
    finally:
        if connection.queries_logged:
            # What Django's debug cursor records (DEBUG, tests' query counts), without the arrays.
            connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


# The unit separator: a control character that real names and addresses do not hold (and that JSON
# escapes); a value that does hold it makes text_array fall back to a list.
SEPARATOR = "\x1f"


def text_array(values: list[str], cast: str = "text") -> tuple[str, Any]:
    """(SQL, parameter) for a `cast[]` of these strings, e.g. `email_key = ANY(<SQL>)`.

    psycopg dumps a list parameter element by element in Python (10 ms for 5,000 hashes); one
    joined string split by PostgreSQL costs a fiftieth of that. Falls back to the list when a value
    contains the separator (or is not a string)."""
    if values and all(isinstance(value, str) for value in values):
        joined = SEPARATOR.join(values)
        if joined.count(SEPARATOR) == len(values) - 1 and (len(values) > 1 or joined):
            return f"string_to_array(%s, E'\\x1f')::{cast}[]", joined
    return f"%s::text[]::{cast}[]", values


def jsonb(value: Any) -> Any:
    """A jsonb column as Python: Django's connection loads jsonb as text and decodes it itself."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def fetch_rows(
    model: type[Model], fields: list[Any], where: str, params: list[Any], *, suffix: str = ""
) -> list[list[Any]]:
    """`SELECT <fields> FROM <table> WHERE <where> <suffix>`, each row a list in `fields` order,
    with JSON columns decoded as the ORM would."""
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    rows = pg_execute(f"SELECT {columns} FROM {table} WHERE {where} {suffix}", params, fetch=True)  # noqa: S608
    json_at = [i for i, field in enumerate(fields) if field.get_internal_type() == "JSONField"]
    out = []
    for row in rows:
        values = list(row)
        for i in json_at:
            values[i] = jsonb(values[i])
        out.append(values)
    return out


def fetch_instances(model: type[M], where: str, params: list[Any], *, suffix: str = "") -> list[M]:
    """Model instances for `SELECT <every column> FROM <table> WHERE <where> <suffix>`."""
    fields = list(model._meta.concrete_fields)
    names = [field.attname for field in fields]
    return [
        model.from_db(connection.alias, names, values)
        for values in fetch_rows(model, fields, where, params, suffix=suffix)
    ]
