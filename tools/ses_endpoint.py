"""A small local Amazon SES v2 endpoint: the test double, the `make run` sink and the benchmark target.

It speaks the sesv2 REST-JSON protocol as botocore sends it (routes and shapes from botocore's
`sesv2/2019-09-27/service-2.json`), for exactly the calls Trickle makes: SendEmail (Simple, Raw,
Template), SendBulkEmail, and Create/Get/Update/DeleteEmailTemplate. botocore has already
validated every request against the service model before it reaches us, so this checks only what
SES itself would refuse at runtime (unknown template, too many entries, no recipient).

Every accepted email is recorded in memory, in order. A small JSON control API under `/_ses/`
(not part of SES) reads the records and injects faults: a delay on every call, a fraction of calls
throttled (429 TooManyRequestsException) or failed (500 InternalFailure), recipients rejected.
A faulted call records nothing, so a test can count duplicates exactly.

    python tools/ses_endpoint.py --host 127.0.0.1 --port 8025 [--delay-ms 50] [--keep 100000]

or in-process: `endpoint = start(); ...; endpoint.stop()`. See docs/ses-endpoint.md.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.policy
import html
import itertools
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_BULK_ENTRIES = 50
TEMPLATES_PATH = "/v2/email/templates"
HEADER_PARSER = BytesParser(policy=email.policy.default)

DEFAULT_CONFIG: dict[str, Any] = {
    "delay_ms": 0,
    "throttle_ratio": 0.0,
    "error_ratio": 0.0,
    "reject": [],
    "seed": None,
}


class SesError(Exception):
    """An SES API error, answered the way botocore's rest-json parser reads it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str) -> SesError:
    return SesError(400, "BadRequestException", message)


def parse_raw_email(raw: str | bytes) -> EmailMessage:
    """The full MIME message of a recorded Raw send, parsed with the modern email policy."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def _addresses(destination: dict[str, Any] | None) -> dict[str, list[str]]:
    destination = destination or {}
    return {
        "to": list(destination.get("ToAddresses") or []),
        "cc": list(destination.get("CcAddresses") or []),
        "bcc": list(destination.get("BccAddresses") or []),
    }


def _addr_specs(values: Iterable[str]) -> set[str]:
    return {addr.lower() for _, addr in getaddresses(list(values)) if addr}


def _json_object(text: str | None, field: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise bad_request(f"{field} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be a JSON object")
    return value


class SesState:
    """Templates, recorded emails, counters and fault settings, shared by all handler threads."""

    def __init__(self, *, keep: int | None = None) -> None:
        self.lock = threading.Lock()
        self.templates: dict[str, dict[str, str]] = {}
        self.keep = keep
        self.messages: deque[dict[str, Any]] = deque(maxlen=keep)
        self.stats: Counter[str] = Counter()
        self.config: dict[str, Any] = dict(DEFAULT_CONFIG)
        self.rng = random.Random()
        self._reject: frozenset[str] = frozenset()
        # Message ids look like SES's (unique, opaque); a counter plus a per-run prefix is cheap.
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:12]

    # -- control -------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        unknown = set(changes) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self.lock:
            for key in ("throttle_ratio", "error_ratio"):
                if key in changes and not 0.0 <= float(changes[key]) <= 1.0:
                    raise ValueError(f"{key} must be between 0 and 1")
            if "delay_ms" in changes and int(changes["delay_ms"]) < 0:
                raise ValueError("delay_ms must be >= 0")
            if "reject" in changes and not isinstance(changes["reject"], list):
                raise ValueError("reject must be a list of addresses")
            self.config.update(changes)
            self.config["delay_ms"] = int(self.config["delay_ms"])
            self.config["throttle_ratio"] = float(self.config["throttle_ratio"])
            self.config["error_ratio"] = float(self.config["error_ratio"])
            self._reject = frozenset(_addr_specs(self.config["reject"]))
            if "seed" in changes:
                self.rng.seed(changes["seed"])
            return dict(self.config)

    def reset(self) -> None:
        """Forget messages, templates, counters and faults: a fresh endpoint."""
        with self.lock:
            self.messages.clear()
            self.templates.clear()
            self.stats.clear()
            self.config = dict(DEFAULT_CONFIG)
            self._reject = frozenset()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def clear_messages(self) -> None:
        with self.lock:
            self.messages.clear()

    def stats_snapshot(self) -> dict[str, Any]:
        with self.lock:
            stats = dict(self.stats)
            recorded = len(self.messages)
        return {
            "calls": stats.pop("calls", 0),
            "accepted": stats.pop("accepted", 0),
            "recorded": recorded,
            "throttled": stats.pop("throttled", 0),
            "errors": stats.pop("errors", 0),
            "rejected": stats.pop("rejected", 0),
            "by_operation": {k.removeprefix("op:"): v for k, v in sorted(stats.items()) if k.startswith("op:")},
            "cpu_seconds": round(time.process_time(), 3),
        }

    # -- SES calls -----------------------------------------------------------------------------

    def before_call(self, operation: str) -> None:
        """Count the call, sleep the configured delay, and maybe fail it (throttling or 5xx)."""
        with self.lock:
            self.stats["calls"] += 1
            self.stats["op:" + operation] += 1
            delay_ms = self.config["delay_ms"]
            throttle_ratio = self.config["throttle_ratio"]
            error_ratio = self.config["error_ratio"]
            draw = self.rng.random() if (throttle_ratio or error_ratio) else 1.0
            if draw < throttle_ratio:
                self.stats["throttled"] += 1
                fault = SesError(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
            elif draw < throttle_ratio + error_ratio:
                self.stats["errors"] += 1
                fault = SesError(500, "InternalFailure", "The request processing has failed (injected fault).")
            else:
                fault = None
        if delay_ms:
            # Sleeping outside the lock lets concurrent requests overlap, as with real SES latency.
            time.sleep(delay_ms / 1000)
        if fault is not None:
            raise fault

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):012d}-000000"

    def _is_rejected(self, addresses: Iterable[str]) -> bool:
        return bool(self._reject) and not self._reject.isdisjoint(_addr_specs(addresses))

    def _template(self, name: str) -> dict[str, str]:
        template = self.templates.get(name)
        if template is None:
            raise SesError(404, "NotFoundException", f"Template {name} does not exist.")
        return dict(template)

    def _common(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "received_at": time.time(),
            "from": body.get("FromEmailAddress"),
            "reply_to": list(body.get("ReplyToAddresses") or []),
            "configuration_set": body.get("ConfigurationSetName"),
            "feedback_forwarding": body.get("FeedbackForwardingEmailAddress"),
        }

    def send_email(self, body: dict[str, Any]) -> dict[str, Any]:
        content = body.get("Content") or {}
        record = self._common(body, "")
        destination = _addresses(body.get("Destination"))
        if "Raw" in content:
            try:
                data = base64.b64decode(content["Raw"].get("Data") or "", validate=True)
            except binascii.Error:
                raise bad_request("Content.Raw.Data is not valid base64") from None
            parsed = HEADER_PARSER.parsebytes(data, headersonly=True)
            if not any(destination.values()):
                # Like SES: without a Destination, the recipients come from the MIME headers.
                destination = {
                    "to": parsed.get_all("To", []),
                    "cc": parsed.get_all("Cc", []),
                    "bcc": parsed.get_all("Bcc", []),
                }
                destination = {key: [str(v) for v in values] for key, values in destination.items()}
            record.update(
                kind="raw",
                subject=str(parsed.get("Subject", "")),
                # A header folded right after its name unfolds with a leading space; it is not part of the value.
                headers=[[name, str(value).lstrip()] for name, value in parsed.items()],
                raw=data.decode("utf-8", "surrogateescape"),
            )
            if record["from"] is None:
                record["from"] = str(parsed.get("From", "")) or None
        elif "Simple" in content:
            simple = content["Simple"]
            message_body = simple.get("Body") or {}
            record.update(
                kind="simple",
                subject=(simple.get("Subject") or {}).get("Data", ""),
                text=(message_body.get("Text") or {}).get("Data"),
                html=(message_body.get("Html") or {}).get("Data"),
                headers=[[h["Name"], h["Value"]] for h in simple.get("Headers") or []],
            )
        elif "Template" in content:
            template = content["Template"]
            name = template.get("TemplateName")
            with self.lock:
                stored = self._template(name) if name else dict(template.get("TemplateContent") or {})
            record.update(
                kind="template",
                template_name=name,
                template=stored,
                subject=stored.get("Subject", ""),
                template_data=_json_object(template.get("TemplateData"), "Content.Template.TemplateData"),
                headers=[[h["Name"], h["Value"]] for h in template.get("Headers") or []],
            )
        else:
            raise bad_request("Content must have one of Simple, Raw or Template.")
        all_recipients = [*destination["to"], *destination["cc"], *destination["bcc"]]
        if not all_recipients:
            raise bad_request("Missing required destination: at least one recipient is needed.")
        if len(all_recipients) > 50:
            raise SesError(400, "MessageRejected", "Recipient count exceeds 50.")
        with self.lock:
            if self._is_rejected(all_recipients):
                self.stats["rejected"] += 1
                raise SesError(400, "MessageRejected", "Email address is on the suppression list (injected fault).")
            record["id"] = message_id = self._new_id()
            record["destination"] = destination
            self.messages.append(record)
            self.stats["accepted"] += 1
        return {"MessageId": message_id}

    def send_bulk_email(self, body: dict[str, Any]) -> dict[str, Any]:
        entries = body.get("BulkEmailEntries") or []
        if not entries:
            raise bad_request("BulkEmailEntries must not be empty.")
        if len(entries) > MAX_BULK_ENTRIES:
            raise bad_request(f"Too many bulk entries: {len(entries)} > {MAX_BULK_ENTRIES}.")
        template = ((body.get("DefaultContent") or {}).get("Template")) or {}
        name = template.get("TemplateName")
        default_data = _json_object(template.get("TemplateData"), "DefaultContent.Template.TemplateData")
        default_headers = [[h["Name"], h["Value"]] for h in template.get("Headers") or []]
        parsed_entries = []
        for index, entry in enumerate(entries):
            replacement = ((entry.get("ReplacementEmailContent") or {}).get("ReplacementTemplate")) or {}
            destination = _addresses(entry.get("Destination"))
            if not any(destination.values()):
                raise bad_request(f"BulkEmailEntries[{index}].Destination has no recipient.")
            data_text = replacement.get("ReplacementTemplateData")
            parsed_entries.append(
                (
                    destination,
                    _json_object(data_text, f"BulkEmailEntries[{index}].ReplacementTemplateData"),
                    data_text is not None,
                    [[h["Name"], h["Value"]] for h in entry.get("ReplacementHeaders") or []],
                )
            )
        common = self._common(body, "bulk")
        results = []
        with self.lock:
            if name:
                stored = self._template(name)
            elif template.get("TemplateContent"):
                stored = dict(template["TemplateContent"])
            else:
                raise bad_request("DefaultContent.Template needs a TemplateName or TemplateContent.")
            batch = next(self._ids)
            for destination, data, has_data, headers in parsed_entries:
                recipients = [*destination["to"], *destination["cc"], *destination["bcc"]]
                if self._is_rejected(recipients):
                    self.stats["rejected"] += 1
                    results.append({"Status": "MESSAGE_REJECTED", "Error": "Email address is on the suppression list."})
                    continue
                message_id = self._new_id()
                self.messages.append(
                    {
                        **common,
                        "id": message_id,
                        "batch": batch,
                        "destination": destination,
                        "template_name": name,
                        "template": stored,
                        "subject": stored.get("Subject", ""),
                        "default_template_data": default_data,
                        # SES uses the default data for an entry that brings none of its own.
                        "template_data": data if has_data else default_data,
                        "headers": headers or default_headers,
                    }
                )
                self.stats["accepted"] += 1
                results.append({"Status": "SUCCESS", "MessageId": message_id})
        return {"BulkEmailEntryResults": results}

    def create_template(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("TemplateName")
        if not name:
            raise bad_request("TemplateName is required.")
        with self.lock:
            if name in self.templates:
                raise SesError(400, "AlreadyExistsException", f"Template {name} already exists.")
            self.templates[name] = dict(body.get("TemplateContent") or {})
        return {}

    def get_template(self, name: str) -> dict[str, Any]:
        with self.lock:
            return {"TemplateName": name, "TemplateContent": self._template(name)}

    def update_template(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._template(name)
            self.templates[name] = dict(body.get("TemplateContent") or {})
        return {}

    def delete_template(self, name: str) -> dict[str, Any]:
        with self.lock:
            self._template(name)
            del self.templates[name]
        return {}


def _render_template_record(record: dict[str, Any]) -> tuple[str, str]:
    """Subject and HTML body of a template/bulk record via campaigns.templating, else the raw parts."""
    template = record.get("template") or {}
    data = {**record.get("default_template_data", {}), **record.get("template_data", {})}
    try:
        from campaigns import templating

        subject = templating.render_subject(templating.compile_template(template.get("Subject", "")), data)
        body = templating.compile_template(template.get("Html") or template.get("Text") or "").render(
            data, escape=bool(template.get("Html"))
        )
        return str(subject), str(body)
    except Exception:
        # The renderer is optional here (another part of Trickle); show what SES was given instead.
        raw = template.get("Html") or html.escape(template.get("Text") or "")
        return template.get("Subject", ""), f"{raw}<hr><pre>{html.escape(json.dumps(data, indent=2))}</pre>"


def _html_page(records: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    rows = []
    for index in range(len(records) - 1, max(len(records) - 201, -1), -1):
        record = records[index]
        subject = record.get("subject", "")
        if record["kind"] in ("bulk", "template"):
            subject = _render_template_record(record)[0]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["received_at"]))
        rows.append(
            f"<tr><td>{when}</td><td>{html.escape(', '.join(record['destination']['to']))}</td>"
            f'<td><a href="/_ses/messages/{record["id"]}">{html.escape(str(subject))}</a></td>'
            f"<td>{record['kind']}</td></tr>"
        )
    return (
        "<!doctype html><meta charset=utf-8><title>Local SES</title>"
        "<style>body{font:14px sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}</style>"
        f"<h1>Local SES endpoint</h1><p>{stats['accepted']} emails accepted in {stats['calls']} calls; "
        f"newest {len(rows)} shown. JSON: <a href=/_ses/messages>/_ses/messages</a>, "
        "<a href=/_ses/stats>/_ses/stats</a>.</p>"
        "<table><tr><th>received (UTC)</th><th>to</th><th>subject</th><th>kind</th></tr>" + "".join(rows) + "</table>"
    )


def _html_message(record: dict[str, Any]) -> str:
    if record["kind"] in ("bulk", "template"):
        subject, body = _render_template_record(record)
    elif record["kind"] == "raw":
        message = parse_raw_email(record["raw"])
        subject = record.get("subject", "")
        part = message.get_body(preferencelist=("html", "plain"))
        content = part.get_content() if part is not None else ""
        body = (
            content
            if part is not None and part.get_content_subtype() == "html"
            else f"<pre>{html.escape(content)}</pre>"
        )
    else:
        subject = record.get("subject", "")
        body = record.get("html") or f"<pre>{html.escape(record.get('text') or '')}</pre>"
    headers = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in record.get("headers", [])
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(str(subject))}</title>"
        "<style>body{font:14px sans-serif;margin:2em}th,td{text-align:left;padding:2px 8px}</style>"
        f"<p><a href=/_ses/>all messages</a></p><h1>{html.escape(str(subject))}</h1>"
        f"<table><tr><th>From</th><td>{html.escape(str(record.get('from')))}</td></tr>"
        f"<tr><th>To</th><td>{html.escape(', '.join(record['destination']['to']))}</td></tr>{headers}</table>"
        # The body is shown sandboxed: it is untrusted mail content.
        f'<iframe sandbox srcdoc="{html.escape(body)}" style="width:100%;height:70vh;border:1px solid #ccc">'
        "</iframe>"
    )


class SesRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its pooled connections
    server_version = "TrickleLocalSES/1.0"
    disable_nagle_algorithm = True
    server: SesHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per call would cost more than the call itself

    def _reply(self, status: int, body: bytes, content_type: str = "application/json", extra: str = "") -> None:
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"x-amzn-RequestId: {uuid.uuid4()}\r\n{extra}\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def _json(self, status: int, payload: Any, extra: str = "") -> None:
        self._reply(status, json.dumps(payload).encode(), extra=extra)

    def _error(self, err: SesError) -> None:
        # botocore's rest-json parser takes the code from x-amzn-ErrorType, the text from "message".
        self._json(err.status, {"message": err.message}, extra=f"x-amzn-ErrorType: {err.code}:\r\n")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise bad_request("Request body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise bad_request("Request body must be a JSON object.")
        return value

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        state = self.server.state
        try:
            body = self._body() if method in ("POST", "PUT") else {}
            if path.startswith("/_ses"):
                self._control(method, path, body)
                return
            if method == "POST" and path == "/v2/email/outbound-bulk-emails":
                state.before_call("SendBulkEmail")
                result = state.send_bulk_email(body)
            elif method == "POST" and path == "/v2/email/outbound-emails":
                state.before_call("SendEmail")
                result = state.send_email(body)
            elif method == "POST" and path == TEMPLATES_PATH:
                state.before_call("CreateEmailTemplate")
                result = state.create_template(body)
            elif path.startswith(TEMPLATES_PATH + "/") and method in ("GET", "PUT", "DELETE"):
                name = unquote(path[len(TEMPLATES_PATH) + 1 :])
                if method == "GET":
                    state.before_call("GetEmailTemplate")
                    result = state.get_template(name)
                elif method == "PUT":
                    state.before_call("UpdateEmailTemplate")
                    result = state.update_template(name, body)
                else:
                    state.before_call("DeleteEmailTemplate")
                    result = state.delete_template(name)
            else:
                raise SesError(404, "UnknownOperationException", f"{method} {path} is not implemented here.")
        except SesError as err:
            self._error(err)
            return
        self._json(200, result)

    def _control(self, method: str, path: str, body: dict[str, Any]) -> None:
        state = self.server.state
        path = path.rstrip("/")
        if path == "/_ses" and method == "GET":
            page = _html_page(state.snapshot(), state.stats_snapshot())
            self._reply(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/_ses/messages" and method == "GET":
            self._json(200, state.snapshot())
        elif path == "/_ses/messages" and method == "DELETE":
            state.clear_messages()
            self._json(200, {})
        elif path.startswith("/_ses/messages/") and method == "GET":
            message_id = unquote(path.rsplit("/", 1)[1])
            record = next((r for r in reversed(state.snapshot()) if r["id"] == message_id), None)
            if record is None:
                self._json(404, {"message": "no such message"})
                return
            self._reply(200, _html_message(record).encode(), "text/html; charset=utf-8")
        elif path == "/_ses/stats" and method == "GET":
            self._json(200, state.stats_snapshot())
        elif path == "/_ses/config" and method == "GET":
            self._json(200, state.configure())
        elif path == "/_ses/config" and method == "POST":
            try:
                self._json(200, state.configure(**body))
            except (TypeError, ValueError) as err:
                self._json(400, {"message": str(err)})
        elif path == "/_ses/reset" and method == "POST":
            state.reset()
            self._json(200, {})
        else:
            self._json(404, {"message": f"{method} {path} is not a control endpoint"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class SesHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], *, state: SesState) -> None:
        self.state = state
        super().__init__(address, SesRequestHandler)


class SesEndpoint:
    """A running endpoint in a background thread; `url` is what boto3's endpoint_url takes."""

    def __init__(self, server: SesHTTPServer) -> None:
        self.server = server
        self.state = server.state
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        # A short poll interval makes stop() quick; idle polling costs next to nothing.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ses-endpoint", daemon=True
        )
        self._thread.start()

    def messages(self) -> list[dict[str, Any]]:
        """Recorded accepted emails, oldest first (the same dicts `GET /_ses/messages` returns)."""
        return self.state.snapshot()

    def emails(self) -> list[EmailMessage]:
        """The recorded Raw sends as parsed MIME messages, oldest first."""
        return [parse_raw_email(record["raw"]) for record in self.messages() if record["kind"] == "raw"]

    def stats(self) -> dict[str, Any]:
        return self.state.stats_snapshot()

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change faults at runtime: delay_ms, throttle_ratio, error_ratio, reject, seed."""
        return self.state.configure(**changes)

    def reset(self) -> None:
        self.state.reset()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def start(host: str = "127.0.0.1", port: int = 0, *, keep: int | None = None, **config: Any) -> SesEndpoint:
    """Start an endpoint on (host, port) in a background thread; port 0 picks a free one."""
    state = SesState(keep=keep)
    if config:
        state.configure(**config)
    return SesEndpoint(SesHTTPServer((host, port), state=state))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Amazon SES v2 endpoint (tests, dev sink, benchmark).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--delay-ms", type=int, default=0, help="answer every SES call after this many ms")
    # About 2 KB per recorded email: bounded by default so a million-email benchmark stays small.
    parser.add_argument("--keep", type=int, default=100_000, help="remember only the newest N emails; 0: all")
    args = parser.parse_args(argv)
    # Run as a script, so make the project importable for the HTML page's campaigns.templating.
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
    server = SesHTTPServer((args.host, args.port), state=SesState(keep=args.keep or None))
    server.state.configure(delay_ms=args.delay_ms)
    print(f"Local SES v2 endpoint on http://{args.host}:{server.server_address[1]} (messages: /_ses/)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
