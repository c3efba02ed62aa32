from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns.filters import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Comparison,
    FilterError,
    Not,
    Or,
    compile_filter,
    contact_mapping,
    evaluate,
    parse,
)
from campaigns.models import Campaign
from contacts.models import Contact
from crm.models import Workspace
from tests.factories import ContactFactory

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


def matching(workspace: Workspace, text: str, *, now: datetime = NOW) -> set[str]:
    """The emails the filter selects in SQL, after checking that Python agrees row by row."""
    contacts = list(Contact.objects.filter(workspace=workspace))
    in_sql = set(
        Contact.objects.filter(workspace=workspace)
        .filter(compile_filter(text, now=now))
        .values_list("email", flat=True)
    )
    in_python = {c.email for c in contacts if evaluate(text, contact_mapping(c), now=now)}
    assert in_sql == in_python, f"SQL and Python disagree on {text!r}"
    # NOT must be the exact complement in SQL too: no row lost to a NULL comparison.
    excluded = set(
        Contact.objects.filter(workspace=workspace)
        .exclude(compile_filter(text, now=now))
        .values_list("email", flat=True)
    )
    assert excluded == {c.email for c in contacts} - in_sql
    return in_sql


@pytest.fixture
def people(workspace: Workspace) -> dict[str, Contact]:
    rows = {
        "ana": ContactFactory(
            workspace=workspace,
            email="Ana@Example.com",
            name="Ana",
            company="Acme",
            source="form",
            attributes={"language": "en", "plan": "pro", "seats": 3, "beta": True, "my-key": "x"},
        ),
        "bo": ContactFactory(
            workspace=workspace,
            email="bo@example.com",
            name="Bo",
            company="",
            source="pricing_wizard",
            attributes={"language": "fr", "plan": "team", "seats": "3", "beta": False},
        ),
        "cy": ContactFactory(
            workspace=workspace,
            email="cy@example.com",
            name="",
            company="Globex",
            status=Contact.Status.UNSUBSCRIBED,
            attributes={"language": "EN", "plan": None, "tags": ["a"], "seats": 2.5},
        ),
        "di": ContactFactory(workspace=workspace, email="di@example.com", name="Di", attributes={}),
    }
    return rows


def emails(*keys: str) -> set[str]:
    table = {"ana": "Ana@Example.com", "bo": "bo@example.com", "cy": "cy@example.com", "di": "di@example.com"}
    return {table[k] for k in keys}


# --- operators, on real rows, SQL and Python together ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"ana", "bo", "cy", "di"}),
        ("   \n\t", {"ana", "bo", "cy", "di"}),
        ("language=en", {"ana"}),
        ("attributes.language=en", {"ana"}),
        ("language = EN", {"cy"}),
        ("language!=en", {"bo", "cy", "di"}),
        ("language in (en, fr)", {"ana", "bo"}),
        ("language IN ('en', \"fr\")", {"ana", "bo"}),
        ("language not in (en, fr)", {"cy", "di"}),
        ("plan exists", {"ana", "bo"}),
        ("NOT plan exists", {"cy", "di"}),
        ("plan != pro", {"bo", "cy", "di"}),
        ("seats=3", {"ana", "bo"}),
        ("seats=2.5", {"cy"}),
        ("seats in (2.5, 3)", {"ana", "bo", "cy"}),
        ("beta=true", {"ana"}),
        ("beta=false", {"bo"}),
        ("beta exists", {"ana", "bo"}),
        ("tags exists", {"cy"}),
        ("tags=a", set()),
        ("tags!=a", {"ana", "bo", "cy", "di"}),
        ("my-key=x", {"ana"}),
        ("attributes.my-key exists", {"ana"}),
        ("email=ana@example.com", {"ana"}),
        ("email='ANA@EXAMPLE.COM'", {"ana"}),
        ("email in (BO@example.com, nobody@example.com)", {"bo"}),
        ("email != ana@example.com", {"bo", "cy", "di"}),
        ("name=Ana", {"ana"}),
        ("name=ana", set()),
        ("name exists", {"ana", "bo", "di"}),
        ("company exists", {"ana", "cy"}),
        ("NOT company exists", {"bo", "di"}),
        ("company not in (Acme)", {"bo", "cy", "di"}),
        ("source=form", {"ana"}),
        ("source=pricing_wizard", {"bo"}),
        ("status=unsubscribed", {"cy"}),
        ("status!=unsubscribed", {"ana", "bo", "di"}),
        ("language=en OR language=fr", {"ana", "bo"}),
        ("language=en and plan=pro", {"ana"}),
        ("language=en AND plan=team", set()),
        ("not (language=en or language=fr)", {"cy", "di"}),
        ("NOT NOT language=en", {"ana"}),
        ("NOT language=en", {"bo", "cy", "di"}),
    ],
)
def test_each_operator_selects_the_same_contacts_in_sql_and_python(
    people: dict[str, Contact], workspace: Workspace, text: str, expected: set[str]
) -> None:
    assert matching(workspace, text) == emails(*expected)


def test_and_binds_tighter_than_or(workspace: Workspace) -> None:
    for a, b, c in [(1, 0, 0), (0, 1, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)]:
        ContactFactory(workspace=workspace, email=f"p{a}{b}{c}@x.test", attributes={"a": a, "b": b * 2, "c": c * 3})

    got = matching(workspace, "a=1 OR b=2 AND c=3")
    grouped = matching(workspace, "(a=1 OR b=2) AND c=3")

    assert got == {"p100@x.test", "p011@x.test", "p111@x.test"}
    assert grouped == {"p011@x.test", "p111@x.test"}


def test_keywords_are_case_insensitive_but_field_names_are_not(
    people: dict[str, Contact], workspace: Workspace
) -> None:
    assert matching(workspace, "language=en oR language=fr AnD plan Exists") == emails("ana", "bo")
    assert matching(workspace, "language NoT iN (en)") == emails("bo", "cy", "di")
    # `Name` is not the built-in `name`: it is an attribute nobody has.
    assert matching(workspace, "Name=Ana") == set()


def test_quoted_values_keep_spaces_quotes_and_escapes(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="q@x.test", attributes={"motto": 'it\'s "fine"\\ok', "city": "São Paulo"})

    assert matching(workspace, "motto = 'it\\'s \"fine\"\\\\ok'") == {"q@x.test"}
    assert matching(workspace, 'motto = "it\'s \\"fine\\"\\\\ok"') == {"q@x.test"}
    assert matching(workspace, "city = 'São Paulo'") == {"q@x.test"}
    assert matching(workspace, "city = 'S\\u00e3o Paulo'") == {"q@x.test"}
    assert matching(workspace, "city in ('Lisbon', 'São Paulo')") == {"q@x.test"}


def test_keywords_can_be_values_when_quoted(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="k@x.test", attributes={"word": "and"})

    assert matching(workspace, "word='and'") == {"k@x.test"}
    with pytest.raises(FilterError) as excinfo:
        parse("word=and")
    assert excinfo.value.position == 5


def test_attribute_that_is_null_does_not_exist_but_matches_not_equal(workspace: Workspace) -> None:
    ContactFactory(workspace=workspace, email="n@x.test", attributes={"plan": None})

    assert matching(workspace, "plan exists") == set()
    assert matching(workspace, "plan != pro") == {"n@x.test"}
    assert matching(workspace, "plan not in (pro)") == {"n@x.test"}
    assert matching(workspace, "plan = null") == set()


# --- created_at ---------------------------------------------------------------------------------


def _created(workspace: Workspace, email: str, at: datetime) -> Contact:
    contact = ContactFactory(workspace=workspace, email=email)
    Contact.objects.filter(pk=contact.pk).update(created_at=at)
    return contact


def test_relative_dates_count_back_from_now(workspace: Workspace) -> None:
    _created(workspace, "new@x.test", NOW - timedelta(hours=3))
    _created(workspace, "week@x.test", NOW - timedelta(days=7))
    _created(workspace, "old@x.test", NOW - timedelta(days=30))

    assert matching(workspace, "created_at > -7d") == {"new@x.test"}
    assert matching(workspace, "created_at >= -7d") == {"new@x.test", "week@x.test"}
    assert matching(workspace, "created_at < -7d") == {"old@x.test"}
    assert matching(workspace, "created_at <= -1w") == {"week@x.test", "old@x.test"}
    assert matching(workspace, "created_at > -4h") == {"new@x.test"}
    assert matching(workspace, "created_at > -180m") == set()
    assert matching(workspace, "created_at >= -180m") == {"new@x.test"}


def test_relative_dates_follow_the_clock(workspace: Workspace) -> None:
    with time_machine.travel(NOW - timedelta(days=2), tick=False):
        ContactFactory(workspace=workspace, email="t@x.test")
    campaign = Campaign(workspace=workspace, name="recent", contact_filter="created_at > -3d")

    with time_machine.travel(NOW, tick=False):
        assert set(campaign.matching_contacts().values_list("email", flat=True)) == {"t@x.test"}
    with time_machine.travel(NOW + timedelta(days=1, seconds=1), tick=False):
        assert not campaign.matching_contacts().exists()


def test_iso_dates_and_datetimes(workspace: Workspace) -> None:
    _created(workspace, "dec@x.test", datetime(2024, 12, 31, 23, 30, tzinfo=UTC))
    _created(workspace, "jan@x.test", datetime(2025, 1, 1, 0, 0, tzinfo=UTC))

    assert matching(workspace, "created_at < 2025-01-01") == {"dec@x.test"}
    assert matching(workspace, "created_at >= 2025-01-01") == {"jan@x.test"}
    assert matching(workspace, "created_at >= 2024-12-31T23:30:00Z") == {"dec@x.test", "jan@x.test"}
    # 01:00 at +02:00 is 23:00 UTC the day before.
    assert matching(workspace, "created_at > '2025-01-01T01:00:00+02:00'") == {"dec@x.test", "jan@x.test"}
    assert matching(workspace, "created_at > 2024-12-31T23:30") == {"jan@x.test"}


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("language=", 9, "expected a value"),
        ("language", 8, "expected =, !=, IN, NOT IN or EXISTS"),
        ("=en", 0, "expected a field name"),
        ("language=en AND", 15, "expected a field name"),
        ("language=en plan=pro", 12, "expected AND, OR"),
        ("(language=en", 12, "expected ')'"),
        ("language=en)", 11, "expected AND, OR"),
        ("language in en", 12, "expected '(' after IN"),
        ("language in ()", 13, "expected a value"),
        ("language in (en,)", 16, "expected a value"),
        ("language in (en fr)", 16, "expected ',' or ')'"),
        ("language not en", 13, "expected IN after NOT"),
        ("language ! en", 9, "expected '!='"),
        ("language=en & plan=pro", 12, "unexpected character '&'"),
        ("language='en", 9, "unterminated string"),
        ("language='e\\qn'", 11, "unknown escape"),
        ("language='\\u12'", 10, "4 hex digits"),
        ("plan > 3", 5, "only compares dates"),
        ("created_at = 2025-01-01", 11, "expected <, <=, >, >= or EXISTS"),
        ("created_at > 7d", 13, "relative date"),
        ("created_at > -7y", 13, "relative date"),
        ("created_at > 2025-13-01", 13, "ISO date"),
        ("attributes.9lives=1", 11, "invalid attribute key"),
        ("attributes.=1", 11, "invalid attribute key"),
        ("created_at > -999999w", 13, "too far back"),
        ("created_at > 0001-01-01T00:00+02:00", 13, "ISO date"),
        ("created_at > -٣d", 13, "relative date"),
        ("a.b=1", 0, "invalid field name"),
        ("attributes exists", 0, "attributes.<key>"),
        ("9lives=1", 0, "invalid field name"),
        ("plan=or", 5, "keyword"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(text: str, position: int, fragment: str) -> None:
    with pytest.raises(FilterError) as excinfo:
        parse(text)

    assert excinfo.value.position == position
    assert fragment in str(excinfo.value)
    assert f"position {position}" in str(excinfo.value)


def test_compile_and_evaluate_refuse_what_parse_refuses() -> None:
    with pytest.raises(FilterError):
        compile_filter("language=", now=NOW)
    with pytest.raises(FilterError):
        evaluate("language=", {"attributes": {}}, now=NOW)


def test_overlong_and_deeply_nested_filters_are_errors_not_crashes() -> None:
    with pytest.raises(FilterError) as too_long:
        parse("a=1 OR " * 400 + "a=1")
    assert too_long.value.position == MAX_LENGTH

    with pytest.raises(FilterError, match="too deeply nested"):
        parse("(" * 500 + "a=1" + ")" * 500)
    with pytest.raises(FilterError, match="too deeply nested"):
        parse("NOT " * 400 + "a=1")
    # Just inside the limit still works, in SQL and in Python.
    nested = "(" * (MAX_DEPTH - 1) + "a=1" + ")" * (MAX_DEPTH - 1)
    assert evaluate(nested, {"attributes": {"a": 1}}, now=NOW)
    assert compile_filter(nested, now=NOW)


def test_long_flat_chains_stay_flat() -> None:
    node = parse(" OR ".join(f"k{i}=v" for i in range(150)))

    assert isinstance(node, Or)
    assert len(node.children) == 150


def test_parse_returns_a_tree_with_or_above_and() -> None:
    node = parse("a=1 OR NOT b=2 AND c in (3, 4)")

    assert isinstance(node, Or)
    first, second = node.children
    assert isinstance(first, Comparison) and first.field.name == "a" and first.values == ("1",)
    assert isinstance(second, And)
    assert isinstance(second.children[0], Not)
    assert second.children[1] == Comparison(second.children[1].field, "in", ("3", "4"), position=19)
    assert parse("   ") is None


def test_campaign_clean_reports_the_position(workspace: Workspace) -> None:
    campaign = Campaign(workspace=workspace, name="x", contact_filter="language=en AND")

    with pytest.raises(ValidationError) as excinfo:
        campaign.clean()

    assert "position 15" in str(excinfo.value.message_dict["contact_filter"])


# --- property: Python and SQL agree on random filters over random contacts ---------------------

# Small pools, so that random filters often hit random contacts (and miss some).
WORDS = ["1", "2.5", "1.0", "true", "false", "x", "X", "", "é", "it's", "ANA@x.test"]
KEYS = ["a", "my-key"]

attribute_values = st.sampled_from(
    [None, True, False, 0, 1, 2.5, 1.0, "1", "true", "x", "X", "", "é", "it's", [1], {"x": 1}]
)
contacts_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["", "Ana", "ana", "x"]),
            "company": st.sampled_from(["", "Acme", "x"]),
            "source": st.sampled_from(["api", "form", "x"]),
            "status": st.sampled_from(["subscribed", "unsubscribed"]),
            "age_hours": st.sampled_from([0, 1, 24, 24 * 7, 24 * 30]),
            "attributes": st.dictionaries(st.sampled_from(KEYS), attribute_values, max_size=3),
        }
    ),
    max_size=6,
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filters_over(pairs: list[tuple[str, str]]) -> st.SearchStrategy[str]:
    """Random filters, half of whose tests compare a field with a value some contact holds."""
    fields = st.sampled_from(["a", "attributes.a", "my-key", "name", "email", "company", "source", "status"])
    value = st.sampled_from(WORDS).map(_quote)
    field_value = st.one_of(st.tuples(fields, value), st.sampled_from(pairs).map(lambda p: (p[0], _quote(p[1]))))
    leaf = st.one_of(
        st.tuples(field_value, st.sampled_from(["=", "!="])).map(lambda t: f"{t[0][0]} {t[1]} {t[0][1]}"),
        st.tuples(field_value, st.sampled_from(["in", "NOT IN"]), st.lists(value, max_size=2)).map(
            lambda t: f"{t[0][0]} {t[1]} ({', '.join([t[0][1], *t[2]])})"
        ),
        fields.map(lambda f: f"{f} exists"),
        st.tuples(
            st.sampled_from(["<", "<=", ">", ">="]), st.sampled_from(["-1h", "-1d", "-7d", "-2w", "2025-01-01"])
        ).map(lambda t: f"created_at {t[0]} {t[1]}"),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            inner.map(lambda f: f"NOT ({f})"),
            st.tuples(inner, st.sampled_from(["AND", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        ),
        max_leaves=5,
    )


def held_values(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(field, spelling) for values these contacts hold; json.dumps is how SQL sees a non-string."""
    pairs = [("email", "ANA@x.test")]
    for row in rows:
        pairs += [(name, row[name]) for name in ("name", "company", "source", "status")]
        for key, value in row["attributes"].items():
            pairs.append((key, value if isinstance(value, str) else json.dumps(value)))
            pairs.append((key, str(value)))
    return pairs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=contacts_strategy, data=st.data())
def test_python_evaluate_agrees_with_sql_on_random_filters(
    workspace: Workspace, rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    text = data.draw(filters_over(held_values(rows)), label="filter")
    # The db fixture's transaction spans every example, so each example cleans up after itself.
    try:
        for i, row in enumerate(rows):
            email = "ana@x.test" if i == 0 else f"p{i}@x.test"
            contact = ContactFactory(
                workspace=workspace,
                email=email,
                name=row["name"],
                company=row["company"],
                source=row["source"],
                status=row["status"],
                attributes=row["attributes"],
            )
            Contact.objects.filter(pk=contact.pk).update(created_at=NOW - timedelta(hours=row["age_hours"]))
        matching(workspace, text)
    finally:
        Contact.objects.filter(workspace=workspace).delete()
