"""The contact filter language: `language=en AND (plan in (pro, team) OR created_at > -7d)`.

One grammar, two evaluators that must agree exactly: `compile_filter` builds a `Q` over
`contacts.Contact` (SQLite and PostgreSQL), `evaluate` runs the same semantics in Python on a
plain dict. The semantics are documented in docs/filters-and-templates.md; in short:

- attribute values compare as text: strings as they are, numbers as their JSON text
  (`3`, `2.5`), booleans as `true`/`false`; null, lists and objects have no text and never
  equal anything;
- equality is case-sensitive except on `email`, which compares lower-cased (`email_key`);
- `!=` and `not in` also match contacts that lack the attribute;
- `exists` on an attribute: the key is present and not null; on a built-in: non-empty;
- `<`, `<=`, `>`, `>=` only on `created_at`, against `-7d` (now minus 7 days; units m, h, d,
  w) or an ISO date/datetime (naive means UTC).

Every leaf is two-valued in SQL as in Python (no NULL leaks out of a comparison), so `NOT`
means the same thing on both sides.

    filter  := or_expr
    or_expr := and_expr ("OR" and_expr)*
    and_expr:= unary ("AND" unary)*
    unary   := "NOT" unary | "(" or_expr ")" | test
    test    := FIELD ("=" | "!=") VALUE | FIELD ["NOT"] "IN" "(" VALUE ("," VALUE)* ")"
             | FIELD "EXISTS" | "created_at" ("<" | "<=" | ">" | ">=") DATE
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import F, Func, Q, TextField
from django.db.models.lookups import Exact, In, IsNull

from contacts.normalize import email_key

MAX_LENGTH = 2000
MAX_DEPTH = 32

BUILTIN_FIELDS = ("email", "name", "company", "source", "status", "created_at")
KEYWORDS = frozenset({"and", "or", "not", "in", "exists"})
ATTRIBUTE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
RELATIVE = re.compile(r"-([0-9]{1,6})([mhdw])\Z")
# Far enough back for any real contact, near enough that `now - delta` cannot overflow.
MAX_RELATIVE = timedelta(days=366 * 200)
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
COMPARISONS = ("<", "<=", ">", ">=")


class FilterError(ValueError):
    """A filter that does not parse; `position` is the 0-based character offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


# --- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    is_attribute: bool


@dataclass(frozen=True)
class Comparison:
    """One comparison. `values` holds the operand(s); for dates, `when` is absolute or relative."""

    field: Field
    op: str  # "=", "!=", "in", "not in", "exists", "<", "<=", ">", ">="
    values: tuple[str, ...] = ()
    when: datetime | timedelta | None = None
    position: int = 0


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Comparison | And | Or | Not


# --- lexer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "string", "op", "(", ")", ",", "end"
    text: str
    position: int

    @property
    def keyword(self) -> str | None:
        lowered = self.text.lower()
        return lowered if self.kind == "word" and lowered in KEYWORDS else None


WORD_PUNCTUATION = set("_.@+-:/")
ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in WORD_PUNCTUATION


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(Token(ch, ch, i))
            i += 1
        elif ch in "<>!=":
            two = text[i : i + 2]
            if two in ("<=", ">=", "!="):
                tokens.append(Token("op", two, i))
                i += 2
            elif ch == "!":
                raise FilterError("expected '!=' after '!'", i)
            else:
                tokens.append(Token("op", ch, i))
                i += 1
        elif ch in "'\"":
            start, i = i, i + 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise FilterError(f"unterminated string: expected a closing {ch}", start)
                c = text[i]
                if c == ch:
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise FilterError(f"unterminated string: expected a closing {ch}", start)
                    esc = text[i + 1]
                    if esc == "u":
                        digits = text[i + 2 : i + 6]
                        if not re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
                            raise FilterError("expected 4 hex digits after \\u", i)
                        chars.append(chr(int(digits, 16)))
                        i += 6
                        continue
                    if esc not in ESCAPES:
                        raise FilterError("unknown escape: expected one of \\\\ \\' \\\" \\n \\t \\r \\0 \\uXXXX", i)
                    chars.append(ESCAPES[esc])
                    i += 2
                    continue
                chars.append(c)
                i += 1
            tokens.append(Token("string", "".join(chars), start))
        elif _is_word_char(ch):
            start = i
            while i < n and _is_word_char(text[i]):
                i += 1
            tokens.append(Token("word", text[start:i], start))
        else:
            raise FilterError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", "", n))
    return tokens


# --- parser ------------------------------------------------------------------------------------


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "end of filter"
    if token.kind == "string":
        return "a quoted string"
    return repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, expected: str) -> FilterError:
        return FilterError(f"expected {expected}, found {_describe(self.token)}", self.token.position)

    def parse(self) -> Node:
        node = self.or_expr(0)
        if self.token.kind != "end":
            if self.token.kind == ")":
                raise FilterError("unmatched ')': expected AND, OR or the end of the filter", self.token.position)
            raise self.fail("AND, OR or the end of the filter")
        return node

    def or_expr(self, depth: int) -> Node:
        children = [self.and_expr(depth)]
        while self.token.keyword == "or":
            self.advance()
            children.append(self.and_expr(depth))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self, depth: int) -> Node:
        children = [self.unary(depth)]
        while self.token.keyword == "and":
            self.advance()
            children.append(self.unary(depth))
        return children[0] if len(children) == 1 else And(tuple(children))

    def unary(self, depth: int) -> Node:
        if depth >= MAX_DEPTH:
            raise FilterError(
                f"too deeply nested: at most {MAX_DEPTH} levels of NOT and parentheses", self.token.position
            )
        if self.token.keyword == "not":
            self.advance()
            return Not(self.unary(depth + 1))
        if self.token.kind == "(":
            self.advance()
            node = self.or_expr(depth + 1)
            if self.token.kind != ")":
                raise self.fail("')' or AND/OR")
            self.advance()
            return node
        return self.test()

    def field(self) -> Field:
        token = self.token
        if token.kind != "word" or token.keyword:
            raise self.fail("a field name, NOT or '('")
        self.advance()
        name = token.text
        if name.startswith("attributes."):
            key = name[len("attributes.") :]
            if not ATTRIBUTE_KEY.match(key):
                raise FilterError(
                    f"invalid attribute key {key!r}: expected letters, digits, '_' or '-', not starting with a digit",
                    token.position + len("attributes."),
                )
            return Field(key, is_attribute=True)
        if name in BUILTIN_FIELDS:
            return Field(name, is_attribute=False)
        if name == "attributes":
            raise FilterError("expected attributes.<key>, e.g. attributes.plan", token.position)
        if not ATTRIBUTE_KEY.match(name):
            raise FilterError(
                f"invalid field name {name!r}: expected one of {', '.join(BUILTIN_FIELDS)} or an attribute key",
                token.position,
            )
        return Field(name, is_attribute=True)

    def value(self) -> str:
        token = self.token
        if token.kind == "string":
            self.advance()
            return token.text
        if token.kind == "word" and not token.keyword:
            self.advance()
            return token.text
        if token.keyword:
            raise FilterError(
                f"expected a value, found the keyword {token.text!r} (quote it to use it as a value)", token.position
            )
        raise self.fail("a value")

    def test(self) -> Node:
        start = self.token.position
        field = self.field()
        token = self.token
        is_date = field.name == "created_at" and not field.is_attribute
        if token.keyword == "exists":
            self.advance()
            return Comparison(field, "exists", position=start)
        if token.kind == "op" and token.text in COMPARISONS:
            if not is_date:
                raise FilterError(f"{token.text} only compares dates: use it with created_at", token.position)
            self.advance()
            return Comparison(field, token.text, when=self.date(), position=start)
        if is_date:
            raise self.fail("<, <=, >, >= or EXISTS after created_at")
        if token.kind == "op" and token.text in ("=", "!="):
            self.advance()
            return Comparison(field, token.text, (self.value(),), position=start)
        if token.keyword in ("in", "not"):
            op = "in"
            if token.keyword == "not":
                self.advance()
                if self.token.keyword != "in":
                    raise self.fail("IN after NOT")
                op = "not in"
            self.advance()
            if self.token.kind != "(":
                raise self.fail("'(' after IN")
            self.advance()
            values = [self.value()]
            while self.token.kind == ",":
                self.advance()
                values.append(self.value())
            if self.token.kind != ")":
                raise self.fail("',' or ')'")
            self.advance()
            return Comparison(field, op, tuple(values), position=start)
        raise self.fail("=, !=, IN, NOT IN or EXISTS")

    def date(self) -> datetime | timedelta:
        token = self.token
        if token.kind not in ("word", "string") or token.keyword:
            raise self.fail("a relative date like -7d or an ISO date like 2025-01-31")
        self.advance()
        relative = RELATIVE.match(token.text)
        if relative:
            delta = timedelta(**{UNITS[relative.group(2)]: int(relative.group(1))})
            if delta > MAX_RELATIVE:
                raise FilterError("relative date too far back: at most 200 years", token.position)
            return delta
        try:
            if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", token.text):
                parsed = datetime.combine(date.fromisoformat(token.text), datetime.min.time())
            elif re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]", token.text):
                parsed = datetime.fromisoformat(token.text)
            else:
                raise ValueError(token.text)
            # Both databases store UTC; a moment that has no UTC year (0001 at +02:00) is refused here.
            parsed = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except (ValueError, OverflowError):
            raise FilterError(
                "expected a relative date like -7d (units m, h, d, w) or an ISO date like 2025-01-31, "
                f"found {token.text!r}",
                token.position,
            ) from None
        return parsed


def parse(text: str | None) -> Node | None:
    """The syntax tree of a filter, or None for an empty filter (which matches every contact).

    Raises FilterError naming the position and what was expected. Never recurses more than
    MAX_DEPTH levels, whatever the input.
    """
    if text is None or not text.strip():
        return None
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter too long: at most {MAX_LENGTH} characters", MAX_LENGTH)
    return _Parser(text).parse()


def _as_node(text_or_node: str | Node | None) -> Node | None:
    if text_or_node is None or isinstance(text_or_node, str):
        return parse(text_or_node)
    return text_or_node


def _threshold(when: datetime | timedelta | None, now: datetime) -> datetime:
    assert when is not None
    return now - when if isinstance(when, timedelta) else when


# --- SQL ---------------------------------------------------------------------------------------


class _AttributeFunc(Func):
    """A SQL function of one key of the contact's `attributes`, written per backend."""

    output_field = TextField()

    def __init__(self, key: str) -> None:
        super().__init__(F("attributes"))
        self.key = key

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotImplementedError(f"contact filters support SQLite and PostgreSQL, not {connection.vendor}")


class AttributeText(_AttributeFunc):
    """The text of `attributes -> key` (NULL when missing, null, a list or an object).

    Numbers come out as their JSON text and booleans as true/false on both backends, which is
    what `attribute_text` computes in Python.
    """

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        path = f'$."{self.key}"'
        # `->` keeps a number's JSON text (json_extract would turn true into 1 and 2.50 into 2.5).
        sql = (
            f"(CASE json_type({column}, %s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"WHEN 'text' THEN json_extract({column}, %s) "
            f"WHEN 'integer' THEN ({column} -> %s) WHEN 'real' THEN ({column} -> %s) END)"
        )
        return sql, [*params, path, *params, path, *params, path, *params, path]

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        sql = (
            f"(CASE WHEN jsonb_typeof({column} -> (%s)::text) IN ('string', 'number', 'boolean') "
            f"THEN {column} ->> (%s)::text END)"
        )
        return sql, [*params, self.key, *params, self.key]


class AttributeKind(_AttributeFunc):
    """The JSON type of `attributes -> key`, NULL when the key is missing or its value is null."""

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        return f"NULLIF(json_type({column}, %s), 'null')", [*params, f'$."{self.key}"']

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        return f"NULLIF(jsonb_typeof({column} -> (%s)::text), 'null')", [*params, self.key]


def _builtin_column(field: Field) -> str:
    return "email_key" if field.name == "email" else field.name


def _builtin_value(field: Field, value: str) -> str:
    return email_key(value) if field.name == "email" else value


def _test_q(node: Comparison, now: datetime) -> Q:
    field, op = node.field, node.op
    if op in COMPARISONS:
        lookup = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[op]
        return Q(**{f"created_at__{lookup}": _threshold(node.when, now)})
    if field.is_attribute:
        if op == "exists":
            return Q(IsNull(AttributeKind(field.name), False))
        text = AttributeText(field.name)
        # Spelled out so that each leaf is TRUE or FALSE, never NULL, and NOT stays two-valued.
        present = Q(IsNull(text, False))
        if op == "=":
            return present & Q(Exact(text, node.values[0]))
        if op == "in":
            return present & Q(In(text, list(node.values)))
        if op == "!=":
            return Q(IsNull(text, True)) | ~Q(Exact(text, node.values[0]))
        if op == "not in":
            return Q(IsNull(text, True)) | ~Q(In(text, list(node.values)))
        raise AssertionError(op)
    column = _builtin_column(field)
    if op == "exists":
        return ~Q(**{column: ""})
    values = [_builtin_value(field, v) for v in node.values]
    if op == "=":
        return Q(**{column: values[0]})
    if op == "!=":
        return ~Q(**{column: values[0]})
    if op == "in":
        return Q(**{f"{column}__in": values})
    if op == "not in":
        return ~Q(**{f"{column}__in": values})
    raise AssertionError(op)


def _to_q(node: Node, now: datetime) -> Q:
    if isinstance(node, Comparison):
        return _test_q(node, now)
    if isinstance(node, Not):
        return ~_to_q(node.child, now)
    q = _to_q(node.children[0], now)
    for child in node.children[1:]:
        q = q & _to_q(child, now) if isinstance(node, And) else q | _to_q(child, now)
    return q


def compile_filter(text: str | Node | None, *, now: datetime) -> Q:
    """A Q over contacts.Contact selecting the contacts the filter matches, as of `now`.

    An empty filter matches every contact. It is not `Q()`, because Django drops an empty Q in
    `exclude()` too, and `exclude(q)` must select exactly the contacts that do not match.
    Raises FilterError for a filter that does not parse.
    """
    node = _as_node(text)
    return Q(pk__isnull=False) if node is None else _to_q(node, now)


# --- Python ------------------------------------------------------------------------------------


def attribute_text(value: Any) -> str | None:
    """An attribute value as the filter language compares it (None: no text value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        # The JSON text Django stores, which is what the database hands back.
        return json.dumps(value)
    return None


def _evaluate(node: Node, contact: Mapping[str, Any], now: datetime) -> bool:
    if isinstance(node, Not):
        return not _evaluate(node.child, contact, now)
    if isinstance(node, And):
        return all(_evaluate(child, contact, now) for child in node.children)
    if isinstance(node, Or):
        return any(_evaluate(child, contact, now) for child in node.children)
    field, op = node.field, node.op
    if op in COMPARISONS:
        created, threshold = contact["created_at"], _threshold(node.when, now)
        return {
            "<": created < threshold,
            "<=": created <= threshold,
            ">": created > threshold,
            ">=": created >= threshold,
        }[op]
    if field.is_attribute:
        attributes = contact.get("attributes")
        attributes = attributes if isinstance(attributes, Mapping) else {}
        if op == "exists":
            return attributes.get(field.name) is not None
        text = attribute_text(attributes.get(field.name))
    else:
        raw = contact.get(field.name) or ""
        text = email_key(raw) if field.name == "email" else raw
        if op == "exists":
            return text != ""
    values = [_builtin_value(field, v) for v in node.values] if not field.is_attribute else list(node.values)
    if op == "=":
        return text is not None and text == values[0]
    if op == "!=":
        return text is None or text != values[0]
    if op == "in":
        return text is not None and text in values
    if op == "not in":
        return text is None or text not in values
    raise AssertionError(op)


def evaluate(text_or_node: str | Node | None, contact: Mapping[str, Any], *, now: datetime) -> bool:
    """Whether a contact, as a plain dict, matches: the same answer compile_filter gives in SQL.

    `contact` has the keys email, name, company, source, status, created_at (aware datetime)
    and attributes (dict).
    """
    node = _as_node(text_or_node)
    return True if node is None else _evaluate(node, contact, now)


def contact_mapping(contact: Any) -> dict[str, Any]:
    """The dict `evaluate` reads, from a Contact (or anything with the same attributes)."""
    return {
        "email": contact.email,
        "name": contact.name,
        "company": contact.company,
        "source": contact.source,
        "status": contact.status,
        "created_at": contact.created_at,
        "attributes": contact.attributes,
    }
