"""Message templates: the subset of Handlebars that SES v2 renders, rendered the same way here.

SES `SendBulkEmail` renders Handlebars templates itself; our single-send path renders with
`Template.render`. The two must give the same bytes, so this module follows Handlebars.js
exactly where it matters: the escaping table, how values become text (JavaScript's
`String(value)`), `if`/`unless` falsiness, and the "standalone line" whitespace rule (a block
or comment tag alone on its line removes that line). Anything outside the subset is refused at
compile time with the line and the reason.

Supported: `{{ var }}`, `{{{ var }}}`, `{{#if var}}…{{else}}…{{/if}}`,
`{{#unless var}}…{{else}}…{{/unless}}`, `{{! … }}`, `{{!-- … --}}`, over the variables
`name`, `first_name`, `email`, `company`, `unsubscribe_url` and `attributes.<key>`.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

VARIABLES = frozenset({"name", "first_name", "email", "company", "unsubscribe_url"})
ATTRIBUTE_PATH = re.compile(r"attributes\.[A-Za-z_][A-Za-z0-9_]*\Z")
PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
MAX_LENGTH = 200_000
MAX_DEPTH = 50

# Handlebars.js `escapeExpression`.
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "`": "&#x60;", "=": "&#x3D;"}
_BAD_CHARS = re.compile(r"[&<>\"'`=]")
# JavaScript's \s, which Handlebars' whitespace rules use (Python's \s lacks U+FEFF).
_WS = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


class TemplateError(ValueError):
    """A template that does not compile; `line` is the 1-based line of the offending tag."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.message = message
        self.line = line


# --- syntax tree -------------------------------------------------------------------------------


@dataclass
class Content:
    original: str
    value: str = ""
    left_stripped: bool = False
    right_stripped: bool = False

    def __post_init__(self) -> None:
        self.value = self.original


@dataclass
class Mustache:
    path: str
    raw: bool


@dataclass
class Comment:
    source: str


@dataclass
class Block:
    helper: str  # "if" or "unless"
    path: str
    line: int
    program: list[Statement] = field(default_factory=list)
    inverse: list[Statement] | None = None


Statement = Content | Mustache | Comment | Block


# --- lexer and parser --------------------------------------------------------------------------


def _check_path(path: str, line: int) -> str:
    if path in VARIABLES or ATTRIBUTE_PATH.match(path):
        if path.split(".")[-1] in _LITERALS:
            # Handlebars reads `attributes.true` as a path ending in a literal and refuses it.
            raise TemplateError(f"{path!r}: an attribute key cannot be a Handlebars literal", line)
        return path
    if path == "attributes":
        raise TemplateError("'attributes' needs a key, e.g. {{attributes.plan}}", line)
    if PATH.match(path):
        allowed = ", ".join(sorted(VARIABLES))
        raise TemplateError(f"unknown variable {path!r}: use one of {allowed} or attributes.<key>", line)
    raise TemplateError(f"{path!r} is not a variable name", line)


_LITERALS = frozenset({"true", "false", "null", "undefined"})

_UNSUPPORTED = {
    ">": "partials are not supported",
    "&": "{{& …}} is not supported: use {{{…}}} for unescaped output",
    "^": "inverse sections are not supported: use {{#unless …}} or {{else}}",
    "~": "whitespace control (~) is not supported",
    "*": "decorators are not supported",
}


def _tokens(source: str) -> Iterator[tuple[str, str, int]]:
    """(kind, text, line) for text and tags; kind is text, comment, var, raw, open, else, close."""
    newlines = [i for i, ch in enumerate(source) if ch == "\n"]

    def _line_at(source: str, offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    pos, n = 0, len(source)
    while pos < n:
        start = source.find("{{", pos)
        if start < 0:
            yield "text", source[pos:], _line_at(source, pos)
            return
        line = _line_at(source, start)
        if start > 0 and source[start - 1] == "\\":
            raise TemplateError("escaped mustaches (\\{{) are not supported", line)
        if start > pos:
            yield "text", source[pos:start], _line_at(source, pos)
        if source.startswith("{{{{", start):
            raise TemplateError("raw blocks ({{{{ }}}}) are not supported", line)
        if source.startswith("{{!--", start):
            end = source.find("--}}", start + 5)
            if end < 0:
                raise TemplateError("unclosed comment: expected --}}", line)
            pos = end + 4
            yield "comment", source[start:pos], line
            continue
        if source.startswith("{{!", start):
            end = source.find("}}", start + 3)
            if end < 0:
                raise TemplateError("unclosed comment: expected }}", line)
            pos = end + 2
            yield "comment", source[start:pos], line
            continue
        if source.startswith("{{{", start):
            end = source.find("}}}", start + 3)
            if end < 0:
                raise TemplateError("unclosed tag: expected }}}", line)
            pos = end + 3
            inner = source[start + 3 : end]
            if "{{" in inner:
                raise TemplateError("unclosed tag: expected }}} before the next {{", line)
            yield "raw", inner.strip(_WS), line
            continue
        end = source.find("}}", start + 2)
        if end < 0:
            raise TemplateError("unclosed tag: expected }}", line)
        inner = source[start + 2 : end]
        if "{{" in inner:
            raise TemplateError("unclosed tag: expected }} before the next {{", line)
        pos = end + 2
        if source.startswith("}", pos):
            raise TemplateError("unbalanced braces: '}}}' closes a tag opened with '{{'", line)
        stripped = inner.strip(_WS)
        if not stripped:
            raise TemplateError("empty tag {{}}", line)
        lead = stripped[0]
        if lead in "#/>&^*" and inner[0] != lead:
            # Handlebars reads `{{ #if x}}` as an error, not a block; refuse it here too.
            raise TemplateError(f"no space is allowed between {{{{ and {lead}", line)
        if inner[:1] == "~" or inner[-1:] == "~":
            raise TemplateError(_UNSUPPORTED["~"], line)
        if lead in _UNSUPPORTED:
            raise TemplateError(_UNSUPPORTED[lead], line)
        if lead == "#":
            yield "open", stripped[1:].strip(_WS), line
        elif lead == "/":
            yield "close", stripped[1:].strip(_WS), line
        elif stripped == "else":
            yield "else", stripped, line
        else:
            yield "var", stripped, line


def _parse(source: str) -> list[Statement]:
    root: list[Statement] = []
    stack: list[tuple[Block, list[Statement]]] = []
    body = root
    for kind, text, line in _tokens(source):
        if kind == "text":
            body.append(Content(text))
        elif kind == "comment":
            body.append(Comment(text))
        elif kind in ("var", "raw"):
            words = text.split()
            if words and words[0] == "else":
                raise TemplateError("'else if' chains are not supported: nest a second {{#if}}", line)
            if len(words) != 1:
                what = words[0] if words else ""
                raise TemplateError(f"helpers are not supported ({what!r} with arguments)", line)
            body.append(Mustache(_check_path(text, line), raw=kind == "raw"))
        elif kind == "open":
            words = text.split()
            helper = words[0] if words else ""
            if helper.startswith(">"):
                raise TemplateError(_UNSUPPORTED[">"], line)
            if helper not in ("if", "unless"):
                raise TemplateError(f"block helper {{{{#{helper}}}}} is not supported: use #if or #unless", line)
            if len(words) != 2:
                raise TemplateError(f"{{{{#{helper}}}}} takes exactly one variable", line)
            if "=" in words[1]:
                raise TemplateError(f"{{{{#{helper}}}}} takes no options", line)
            if len(stack) >= MAX_DEPTH:
                raise TemplateError(f"blocks nested too deeply (at most {MAX_DEPTH})", line)
            block = Block(helper, _check_path(words[1], line), line)
            body.append(block)
            stack.append((block, body))
            body = block.program
        elif kind == "else":
            if not stack:
                raise TemplateError("{{else}} outside an {{#if}} or {{#unless}} block", line)
            block = stack[-1][0]
            if block.inverse is not None:
                raise TemplateError(
                    f"a second {{{{else}}}} in the {{{{#{block.helper}}}}} opened on line {block.line}", line
                )
            block.inverse = []
            body = block.inverse
        else:
            if not stack:
                raise TemplateError(f"{{{{/{text}}}}} closes a block that was never opened", line)
            block, parent = stack.pop()
            if text != block.helper:
                raise TemplateError(
                    f"{{{{/{text}}}}} does not match the {{{{#{block.helper}}}}} opened on line {block.line}", line
                )
            body = parent
    if stack:
        block = stack[-1][0]
        raise TemplateError(
            f"{{{{#{block.helper} {block.path}}}}} is never closed: expected {{{{/{block.helper}}}}}", block.line
        )
    return root


# --- Handlebars' standalone-line whitespace rule (port of compiler/whitespace-control.js) ------


def _is_prev_whitespace(body: list[Statement], i: int | None = None, is_root: bool = False) -> bool:
    if i is None:
        i = len(body)
    prev = body[i - 1] if i - 1 >= 0 else None
    sibling = body[i - 2] if i - 2 >= 0 else None
    if prev is None:
        return is_root
    if isinstance(prev, Content):
        pattern = rf"\r?\n[{_WS}]*\Z" if sibling is not None or not is_root else rf"(\A|\r?\n)[{_WS}]*\Z"
        return re.search(pattern, prev.original) is not None
    return False


def _is_next_whitespace(body: list[Statement], i: int | None = None, is_root: bool = False) -> bool:
    if i is None:
        i = -1
    nxt = body[i + 1] if i + 1 < len(body) else None
    sibling = body[i + 2] if i + 2 < len(body) else None
    if nxt is None:
        return is_root
    if isinstance(nxt, Content):
        pattern = rf"\A[{_WS}]*?\r?\n" if sibling is not None or not is_root else rf"\A[{_WS}]*?(\r?\n|\Z)"
        return re.match(pattern, nxt.original) is not None
    return False


def _omit_right(body: list[Statement], i: int | None = None) -> None:
    index = 0 if i is None else i + 1
    current = body[index] if index < len(body) else None
    if not isinstance(current, Content) or current.right_stripped:
        return
    original = current.value
    current.value = re.sub(r"\A[ \t]*\r?\n?", "", current.value, count=1)
    current.right_stripped = current.value != original


def _omit_left(body: list[Statement], i: int | None = None) -> bool:
    index = len(body) - 1 if i is None else i - 1
    current = body[index] if 0 <= index < len(body) else None
    if not isinstance(current, Content) or current.left_stripped:
        return False
    original = current.value
    current.value = re.sub(r"[ \t]+\Z", "", current.value, count=1)
    current.left_stripped = current.value != original
    return current.left_stripped


def _strip_program(body: list[Statement], is_root: bool) -> None:
    for i, current in enumerate(body):
        if isinstance(current, Block):
            open_candidate, close_candidate = _strip_block(current)
            prev_ws = _is_prev_whitespace(body, i, is_root)
            next_ws = _is_next_whitespace(body, i, is_root)
            if open_candidate and prev_ws:
                _omit_right(current.program)
                _omit_left(body, i)
            if close_candidate and next_ws:
                _omit_right(body, i)
                _omit_left(current.inverse if current.inverse is not None else current.program)
        elif (
            isinstance(current, Comment)
            and _is_prev_whitespace(body, i, is_root)
            and _is_next_whitespace(body, i, is_root)
        ):
            _omit_right(body, i)
            _omit_left(body, i)


def _strip_block(block: Block) -> tuple[bool, bool]:
    _strip_program(block.program, is_root=False)
    if block.inverse is not None:
        _strip_program(block.inverse, is_root=False)
    # Whether the open and close tags could be standalone, for the parent to decide.
    open_candidate = _is_next_whitespace(block.program)
    close_candidate = _is_prev_whitespace(block.inverse if block.inverse is not None else block.program)
    if block.inverse is not None and _is_prev_whitespace(block.program) and _is_next_whitespace(block.inverse):
        _omit_left(block.program)
        _omit_right(block.inverse)
    return open_candidate, close_candidate


# --- values as JavaScript sees them ------------------------------------------------------------


def _js_number(value: float) -> str:
    """ECMAScript Number::toString for a finite float (Python's repr differs in exponent form)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_tuple = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    k = len(digits)
    n = k + int(digits_tuple.exponent)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        exponent = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    return sign + text


def _js_string(value: Any) -> str:
    """JavaScript's String(value) for JSON-like data, with null and undefined as ''."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # JavaScript numbers are doubles: beyond 2**53 they print rounded.
        return str(value) if abs(value) <= 2**53 else _js_number(float(value))
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, list | tuple):
        return ",".join(_js_string(item) for item in value)
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)


def _is_truthy(value: Any) -> bool:
    """Handlebars' `if`: missing, null, false, '', 0 and [] are false; {} is true."""
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool) and (value == 0 or math.isnan(value)):
        return False
    return not (isinstance(value, list | tuple) and len(value) == 0)


def escape_html(text: str) -> str:
    """Handlebars.js escapeExpression on a string: & < > " ' ` = become entities."""
    return _BAD_CHARS.sub(lambda m: _ESCAPES[m.group(0)], text)


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# --- the compiled template ---------------------------------------------------------------------


class Template:
    """A compiled template: render it here, or upload `to_handlebars()` to SES for the same output."""

    def __init__(self, source: str, body: list[Statement]) -> None:
        self.source = source
        self._body = body
        self.variables: frozenset[str] = frozenset(self._paths(body))

    def __repr__(self) -> str:
        return f"<Template {self.source[:40]!r}>"

    @classmethod
    def _paths(cls, body: list[Statement]) -> Iterator[str]:
        for node in body:
            if isinstance(node, Mustache):
                yield node.path
            elif isinstance(node, Block):
                yield node.path
                yield from cls._paths(node.program)
                yield from cls._paths(node.inverse or [])

    def uses(self, name: str) -> bool:
        """Whether the template refers to `name` anywhere (as output or as a condition)."""
        return name in self.variables

    def render(self, data: Mapping[str, Any], *, escape: bool = True) -> str:
        """Render from plain data (dicts, lists, str, numbers, bools, None); never anything else.

        `escape=False` is for plain-text parts: `{{x}}` then outputs like `{{{x}}}`.
        """
        out: list[str] = []
        self._render(self._body, data, escape, out)
        return "".join(out)

    def _render(self, body: list[Statement], data: Mapping[str, Any], escape: bool, out: list[str]) -> None:
        for node in body:
            if isinstance(node, Content):
                out.append(node.value)
            elif isinstance(node, Mustache):
                text = _js_string(_lookup(data, node.path))
                out.append(escape_html(text) if escape and not node.raw else text)
            elif isinstance(node, Block):
                truthy = _is_truthy(_lookup(data, node.path))
                if node.helper == "unless":
                    truthy = not truthy
                branch = node.program if truthy else node.inverse
                if branch:
                    self._render(branch, data, escape, out)

    def to_handlebars(self, *, escape: bool) -> str:
        """Handlebars source that SES renders exactly as `render(data, escape=escape)` does.

        Text is kept byte for byte (so Handlebars finds the same standalone lines we did); tags
        are written canonically; with escape=False every `{{x}}` becomes `{{{x}}}`.
        """
        out: list[str] = []
        self._emit(self._body, escape, out)
        return "".join(out)

    def _emit(self, body: list[Statement], escape: bool, out: list[str]) -> None:
        for node in body:
            if isinstance(node, Content):
                out.append(node.original)
            elif isinstance(node, Comment):
                out.append(node.source)
            elif isinstance(node, Mustache):
                out.append(f"{{{{{{{node.path}}}}}}}" if node.raw or not escape else f"{{{{{node.path}}}}}")
            else:
                out.append(f"{{{{#{node.helper} {node.path}}}}}")
                self._emit(node.program, escape, out)
                if node.inverse is not None:
                    out.append("{{else}}")
                    self._emit(node.inverse, escape, out)
                out.append(f"{{{{/{node.helper}}}}}")


def compile_template(source: str) -> Template:
    """Compile a template, or raise TemplateError with the line and the reason."""
    if source is None:
        source = ""
    if len(source) > MAX_LENGTH:
        raise TemplateError(f"template too long: at most {MAX_LENGTH} characters", 1)
    body = _parse(source)
    _strip_program(body, is_root=True)
    return Template(source, body)


_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def render_subject(template: Template | str, data: Mapping[str, Any]) -> str:
    """A subject line: unescaped, with every run of control characters (CR, LF, tab…) one space.

    Whatever the data holds, the result is one header line: a name like "Ana\\r\\nBcc: x@evil"
    cannot add a header.
    """
    compiled = compile_template(template) if isinstance(template, str) else template
    return collapse_controls(compiled.render(data, escape=False))


def collapse_controls(text: str) -> str:
    """Every run of control characters (C0, DEL, C1, line/paragraph separators) as one space."""
    return _CONTROL_RUN.sub(" ", text)


def first_name(name: str) -> str:
    """The first word of a name: what `{{first_name}}` shows when the data does not give one."""
    parts = (name or "").split()
    return parts[0] if parts else ""


def context(data: Mapping[str, Any]) -> dict[str, Any]:
    """The template data for a contact's plain data (`Contact.template_data()` plus extras).

    Adds first_name when missing, and writes truthy numbers and `true` as the strings
    Handlebars would print. Handlebars.js joins adjacent `{{{a}}}{{{b}}}` outputs with
    JavaScript's `+`, which adds two numbers instead of concatenating them; with strings
    both renderers agree. 0 and false stay as they are, so `{{#if}}` still treats them as false.
    Use the same dict for `render` and for SES's ReplacementTemplateData.
    """
    result = {key: _as_text_if_truthy(value) for key, value in data.items()}
    result.setdefault("first_name", first_name(str(result.get("name") or "")))
    if isinstance(result.get("attributes"), Mapping):
        result["attributes"] = {key: _as_text_if_truthy(value) for key, value in result["attributes"].items()}
    return result


def _as_text_if_truthy(value: Any) -> Any:
    if value is True or (isinstance(value, int | float) and not isinstance(value, bool) and _is_truthy(value)):
        return _js_string(value)
    return value


# --- HTML to plain text ------------------------------------------------------------------------

_TAG = re.compile(r"\{\{!--.*?--\}\}|\{\{\{.*?\}\}\}|\{\{.*?\}\}", re.DOTALL)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_BLOCK = frozenset(
    {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "section",
     "article", "header", "footer", "hr", "form", "address", "figure", "dl"}
)  # fmt: skip
_LINE = frozenset({"li", "tr", "dt", "dd", "figcaption", "caption"})
_DROP = frozenset({"script", "style", "head", "title", "template", "noscript"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropping = 0
        self.pre = 0
        self.links: list[tuple[str, int]] = []
        self.pending = 0

    def _break(self, newlines: int) -> None:
        # Adjacent block edges (</li><li>, </p><p>) share one break instead of stacking up.
        self.pending = max(self.pending, newlines)

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self.pending:
            if not text.strip(" "):
                return
            if self.parts:
                self.parts.append("\n" * self.pending)
            self.pending = 0
        self.parts.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP:
            self.dropping += 1
        elif tag == "br":
            self._emit("\ue003")
        elif tag in _BLOCK:
            self._break(2)
            if tag == "pre":
                self.pre += 1
            if tag == "hr":
                self._emit("----")
                self._break(2)
        elif tag in _LINE:
            self._break(1)
            if tag == "li":
                self._emit("- ")
        elif tag in ("td", "th"):
            self._emit(" ")
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", len(self.parts)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._emit(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "hr", "img"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP:
            self.dropping = max(0, self.dropping - 1)
        elif tag in _BLOCK:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self._break(2)
        elif tag in _LINE:
            self._break(1)
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.parts[start:]).strip()
            href = href.strip()
            if href and not href.startswith("#") and href not in (text, f"mailto:{text}"):
                self._emit(f" ({href})" if text else href)

    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        if self.pre:
            self._emit(data.replace("\n", "\ue002"))
        else:
            self._emit(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body that is still a valid template.

    Paragraphs and line breaks are kept, links become `text (url)`, scripts and styles are
    dropped and entities decoded. Handlebars tags pass through untouched (even inside href),
    and a `{{` that only appears after decoding entities is broken up so it cannot become a tag.
    """
    tags: list[str] = []

    def protect(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return f"\ue000{len(tags) - 1}\ue001"

    parser = _TextExtractor()
    parser.feed(_TAG.sub(protect, html))
    parser.close()
    text = "".join(parser.parts).replace("\ue003", "\n")
    text = text.replace("\xa0", " ")
    lines = [line.strip(" \t") for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n").replace("\ue002", "\n")
    # Braces and backslashes that came from entities must not merge with a tag into a new one.
    while "{{" in text or "}}" in text:
        text = text.replace("{{", "{ {").replace("}}", "} }")
    text = re.sub("([{\\\\])(?=\ue000)", r"\1 ", text)
    text = re.sub("(?<=\ue001)}", " }", text)
    return _PLACEHOLDER.sub(lambda m: tags[int(m.group(1))], text)
