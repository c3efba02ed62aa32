from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import Message
from campaigns.templating import (
    Template,
    TemplateError,
    compile_template,
    context,
    html_to_text,
    render_subject,
)
from tests.factories import ContactFactory

ANA = {
    "name": "Ana Lima",
    "email": "ana@example.com",
    "company": "Acme & Sons",
    "unsubscribe_url": "https://trickle.test/u/tok/",
    "attributes": {"language": "en", "plan": "pro", "seats": 3},
}


def render(source: str, data: dict[str, Any] | None = None, *, escape: bool = True) -> str:
    return compile_template(source).render(ANA if data is None else data, escape=escape)


# --- output and escaping ------------------------------------------------------------------------


def test_it_html_escapes_like_handlebars() -> None:
    data = {"name": "<b>\"Tom\" & 'Jerry'</b> `x` a=b"}

    assert render("{{name}}", data) == (
        "&lt;b&gt;&quot;Tom&quot; &amp; &#x27;Jerry&#x27;&lt;/b&gt; &#x60;x&#x60; a&#x3D;b"
    )


def test_triple_braces_output_raw() -> None:
    assert render("{{{name}}}|{{{ attributes.plan }}}", {"name": "<b>&", "attributes": {"plan": "<i>"}}) == "<b>&|<i>"


def test_escape_false_outputs_everything_raw_for_plain_text_parts() -> None:
    assert render("{{company}} {{{company}}}", escape=False) == "Acme & Sons Acme & Sons"
    assert render("{{company}}") == "Acme &amp; Sons"


def test_dotted_paths_and_whitespace_inside_tags() -> None:
    assert render("{{ attributes.language }}/{{attributes.plan}}/{{ name }}") == "en/pro/Ana Lima"


def test_missing_values_render_as_empty() -> None:
    assert render("[{{company}}][{{attributes.nope}}][{{{first_name}}}]", {"attributes": {}}) == "[][][]"
    assert render("[{{attributes.plan}}]", {"name": "x"}) == "[]"
    assert render("[{{attributes.plan}}]", {"attributes": "not a dict"}) == "[]"


def test_values_print_as_javascript_would() -> None:
    attributes = {"n": 3, "f": 2.5, "whole": 3.0, "big": 1e21, "tiny": 1e-7, "t": True, "no": False, "zero": 0}
    attributes |= {"none": None, "list": [1, None, "a"], "obj": {"a": 1}}
    source = "|".join(f"{{{{attributes.{key}}}}}" for key in attributes)

    assert render(source, {"attributes": attributes}) == "3|2.5|3|1e+21|1e-7|true|false|0||1,,a|[object Object]"


# --- conditionals -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, False, "", 0, 0.0, []])
def test_if_treats_handlebars_falsy_values_as_false(value: Any) -> None:
    data = {"attributes": {"x": value}}

    assert render("{{#if attributes.x}}yes{{else}}no{{/if}}", data) == "no"
    assert render("{{#unless attributes.x}}yes{{else}}no{{/unless}}", data) == "yes"


@pytest.mark.parametrize("value", ["0", "false", " ", 1, -1, 0.5, True, [0], {}, {"a": 1}])
def test_if_treats_everything_else_as_true(value: Any) -> None:
    data = {"attributes": {"x": value}}

    assert render("{{#if attributes.x}}yes{{else}}no{{/if}}", data) == "yes"
    assert render("{{#unless attributes.x}}yes{{/unless}}", data) == ""


def test_a_missing_variable_is_falsy() -> None:
    assert render("{{#if attributes.ghost}}yes{{else}}no{{/if}}", {}) == "no"


def test_fallback_for_a_missing_name() -> None:
    source = "Hi {{#if name}}{{name}}{{else}}there{{/if}},"

    assert render(source, {"name": "Ana"}) == "Hi Ana,"
    assert render(source, {"name": ""}) == "Hi there,"
    assert render(source, {}) == "Hi there,"


def test_nested_blocks() -> None:
    source = "{{#if name}}{{#unless company}}no company{{else}}at {{company}}{{/unless}}{{/if}}"

    assert render(source, {"name": "A", "company": "C&D"}) == "at C&amp;D"
    assert render(source, {"name": "A"}) == "no company"
    assert render(source, {}) == ""


def test_comments_render_nothing() -> None:
    assert render("a{{! note }}b{{!-- has }} inside --}}c") == "abc"


def test_block_tags_alone_on_a_line_remove_the_line_like_handlebars() -> None:
    source = "Hello\n{{#if name}}\n  {{name}}\n{{else}}\n  there\n{{/if}}\n{{! comment }}\nBye\n"

    assert render(source, {"name": "Ana"}) == "Hello\n  Ana\nBye\n"
    assert render(source, {}) == "Hello\n  there\nBye\n"
    # Not standalone: text shares the line, so every character stays.
    assert render("a {{#if name}}b{{/if}} c\n", {"name": 1}) == "a b c\n"


# --- variables ----------------------------------------------------------------------------------


def test_variables_lists_every_path_used_including_conditions() -> None:
    template = compile_template("{{#if attributes.plan}}{{{name}}}{{else}}{{email}}{{/if}} {{! {{company}} }}")

    assert template.variables == {"attributes.plan", "name", "email"}
    assert template.uses("name")
    assert not template.uses("unsubscribe_url")
    assert not template.uses("company")


def test_uses_unsubscribe_url() -> None:
    assert compile_template('<a href="{{unsubscribe_url}}">stop</a>').uses("unsubscribe_url")
    assert not compile_template("no link here").uses("unsubscribe_url")


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ("Hi {{nmae}}", 1, "unknown variable 'nmae'"),
        ("a\nb\n{{ password }}", 3, "unknown variable 'password'"),
        ("{{attributes}}", 1, "needs a key"),
        ("{{attributes.a.b}}", 1, "unknown variable"),
        ("{{attributes.bad-key}}", 1, "not a variable name"),
        ("{{attributes.true}}", 1, "literal"),
        ("{{this}}", 1, "unknown variable"),
        ("{{../name}}", 1, "not a variable name"),
        ("{{@index}}", 1, "not a variable name"),
        ("\n{{uppercase name}}", 2, "helpers are not supported"),
        ("{{#each attributes}}x{{/each}}", 1, "#each"),
        ("{{#with attributes}}x{{/with}}", 1, "#with"),
        ("{{> footer}}", 1, "partials"),
        ("{{#> layout}}x{{/layout}}", 1, "partials"),
        ("{{#if}}x{{/if}}", 1, "exactly one variable"),
        ("{{#if name email}}x{{/if}}", 1, "exactly one variable"),
        ("{{#if name includeZero=true}}x{{/if}}", 1, "exactly one variable"),
        ("{{#if name}}\nx\n", 1, "never closed"),
        ("{{#if name}}x{{/unless}}", 1, "does not match"),
        ("x\n{{/if}}", 2, "never opened"),
        ("{{else}}", 1, "outside"),
        ("{{#if name}}a{{else}}b{{else}}c{{/if}}", 1, "second {{else}}"),
        ("{{#if name}}a{{else if email}}b{{/if}}", 1, "else if"),
        ("Hi {{name", 1, "unclosed tag"),
        ("\n\nHi {{{name}}", 3, "unclosed tag"),
        ("{{name}}}", 1, "unbalanced"),
        ("{{name {{email}}", 1, "unclosed tag"),
        ("{{!-- never closed", 1, "unclosed comment"),
        ("{{}}", 1, "empty tag"),
        ("{{ #if name}}x{{/if}}", 1, "no space"),
        ("{{#if name}}x{{ /if}}", 1, "no space"),
        ("{{~name}}", 1, "whitespace control"),
        ("{{&name}}", 1, "not supported"),
        ("{{^name}}x{{/name}}", 1, "inverse sections"),
        ("{{{{raw}}}}x{{{{/raw}}}}", 1, "raw blocks"),
        ("\\{{name}}", 1, "escaped mustaches"),
    ],
)
def test_compile_errors_name_the_line_and_the_reason(source: str, line: int, fragment: str) -> None:
    with pytest.raises(TemplateError) as excinfo:
        compile_template(source)

    assert excinfo.value.line == line
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith(f"line {line}: ")


def test_message_clean_refuses_a_bad_template_at_save_time() -> None:
    message = Message(subject="Hi {{nmae}}", html_body="<p>ok</p>\n{{#if name}}", text_body="")

    with pytest.raises(ValidationError) as excinfo:
        message.clean()

    errors = excinfo.value.message_dict
    assert "line 1: unknown variable 'nmae'" in errors["subject"][0]
    assert "line 2:" in errors["html_body"][0]
    assert "text_body" not in errors


# --- subjects -----------------------------------------------------------------------------------


def test_subject_cannot_inject_a_header() -> None:
    subject = render_subject(compile_template("Hi {{name}}"), {"name": "Ana\r\nBcc: x@evil"})

    assert subject == "Hi Ana Bcc: x@evil"
    assert "\n" not in subject and "\r" not in subject


def test_subject_collapses_every_control_character_and_does_not_escape() -> None:
    data = {"name": "A\tB\x00\x0bC\u2028D\x85E", "company": "<Tom & Jerry>"}

    assert render_subject("{{name}} {{company}}", data) == "A B C D E <Tom & Jerry>"


# --- SES round trip -----------------------------------------------------------------------------


ROUND_TRIP_SOURCES = [
    "Hi {{#if name}}{{name}}{{else}}there{{/if}}, {{{company}}} {{attributes.plan}}",
    "Hello\n{{#if name}}\n  {{ name }}\n{{else}}\n  there\n{{/if}}\n{{! note }}\nBye\n",
    "{{#unless company}}\n\n{{/unless}}{{!-- x }} --}}\n  {{email}}",
]


@pytest.mark.parametrize("source", ROUND_TRIP_SOURCES)
@pytest.mark.parametrize("escape", [True, False])
def test_to_handlebars_renders_the_same_when_compiled_again(source: str, escape: bool) -> None:
    template = compile_template(source)
    uploaded = template.to_handlebars(escape=escape)

    for data in (ANA, {}, {"name": "<A&B>", "company": ""}):
        # Uploaded source is always rendered by SES with escaping on.
        assert compile_template(uploaded).render(data) == template.render(data, escape=escape)


def test_to_handlebars_is_canonical_and_keeps_text_byte_for_byte() -> None:
    template = compile_template("Hi {{ name }}\r\n{{#if  attributes.plan }}{{{ email }}}{{/if}}{{! c }}")

    assert template.to_handlebars(escape=True) == "Hi {{name}}\r\n{{#if attributes.plan}}{{{email}}}{{/if}}{{! c }}"
    assert template.to_handlebars(escape=False) == "Hi {{{name}}}\r\n{{#if attributes.plan}}{{{email}}}{{/if}}{{! c }}"


# --- data -----------------------------------------------------------------------------------------


def test_context_adds_first_name_and_keeps_falsiness() -> None:
    data = context({"name": "  Ana Maria Lima ", "attributes": {"seats": 3, "zero": 0, "on": True, "off": False}})

    assert data["first_name"] == "Ana"
    assert data["attributes"] == {"seats": "3", "zero": 0, "on": "true", "off": False}
    assert context({"name": "", "first_name": "Al"})["first_name"] == "Al"
    assert context({})["first_name"] == ""


@pytest.mark.django_db
def test_it_renders_a_contacts_template_data() -> None:
    contact = ContactFactory(name="Ana <3", company="", attributes={"language": "pt"})
    template = compile_template("Olá {{first_name}} ({{attributes.language}}){{#unless company}}!{{/unless}}")

    assert template.render(context(contact.template_data())) == "Olá Ana (pt)!"


def test_render_only_reads_plain_data() -> None:
    class Spy(dict):
        def __getattr__(self, name: str) -> Any:  # pragma: no cover - the point is it is never called
            raise AssertionError(name)

    assert render("{{name}}", Spy(name="x")) == "x"
    assert isinstance(compile_template(""), Template)
    assert compile_template("").render({}) == ""


# --- html_to_text -------------------------------------------------------------------------------


def test_html_to_text_keeps_paragraphs_breaks_links_and_drops_scripts() -> None:
    html = """<html><head><title>T</title><style>p { color: red }</style></head><body>
    <h1>Welcome,   {{#if name}}{{name}}{{else}}there{{/if}}!</h1>
    <p>Line one<br>line&nbsp;two &amp; &lt;three&gt;</p>
    <script>alert("x")</script>
    <ul><li>One</li>
    <li>Two <a href="https://x.test/a?b=1&amp;c=2">docs</a></li></ul>
    <p><a href="{{unsubscribe_url}}">Unsubscribe</a> or visit <a href="https://x.test">https://x.test</a></p>
    </body></html>"""

    text = html_to_text(html)

    assert text == (
        "Welcome, {{#if name}}{{name}}{{else}}there{{/if}}!\n\n"
        "Line one\nline two & <three>\n\n"
        "- One\n- Two docs (https://x.test/a?b=1&c=2)\n\n"
        "Unsubscribe ({{unsubscribe_url}}) or visit https://x.test"
    )
    rendered = compile_template(text).render({"name": "Ana", "unsubscribe_url": "https://u.test/1/"}, escape=False)
    assert rendered.startswith("Welcome, Ana!\n\n")
    assert rendered.endswith("Unsubscribe (https://u.test/1/) or visit https://x.test")


def test_html_to_text_keeps_preformatted_text() -> None:
    assert html_to_text("<p>x</p><pre>a\n  b</pre>") == "x\n\na\n  b"


def test_html_to_text_never_turns_decoded_entities_into_tags() -> None:
    text = html_to_text("<p>&#123;&#123;password}} &#123;{{name}} &#92;{{email}}</p>")

    compile_template(text)  # still a valid template
    assert "{{password" not in text
    assert compile_template(text).variables == {"name", "email"}
