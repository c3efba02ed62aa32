"""tools/ses_endpoint.py through a real boto3 sesv2 client and through Django + django-anymail."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailMessage
from botocore.exceptions import ClientError
from django.core.mail import EmailMessage

from tests.ses import ses_client
from tools.ses_endpoint import SesEndpoint, start

UNSUBSCRIBE_URL = "https://trickle.example.com/u/" + "t0k3n" * 16 + "/"
LIST_HEADERS = {
    "List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    "List-Id": "Welcome drip <welcome.acme.trickle.example.com>",
}
TEMPLATE = {"Subject": "Hi {{name}}", "Html": "<p>Hello {{name}} from {{company}}</p>", "Text": "Hello {{name}}"}


def http(endpoint: SesEndpoint, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(endpoint.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
            kind = response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        body, status, kind = err.read(), err.code, err.headers["Content-Type"]
    return status, json.loads(body) if kind.startswith("application/json") else body.decode()


def bulk_message(recipients: list[str], **extra: Any) -> AnymailMessage:
    message = AnymailMessage(from_email="Acme <drip@example.com>", to=recipients, **extra)
    message.template_id = "welcome"
    message.merge_data = {addr: {"name": f"User {n}"} for n, addr in enumerate(recipients)}
    message.merge_headers = {
        addr: {"List-Unsubscribe": f"<https://trickle.example.com/u/{n}/>"} for n, addr in enumerate(recipients)
    }
    return message


@pytest.fixture
def welcome_template(local_ses: SesEndpoint) -> dict[str, str]:
    ses_client(local_ses.url).create_email_template(TemplateName="welcome", TemplateContent=TEMPLATE)
    return TEMPLATE


def test_a_raw_send_through_anymail_keeps_the_list_headers_whole(local_ses: SesEndpoint) -> None:
    message = EmailMessage("Welcome", "Hello", "Acme <drip@example.com>", ["ann@example.com"], headers=LIST_HEADERS)

    assert message.send() == 1

    [email] = local_ses.emails()
    for name, value in LIST_HEADERS.items():
        # Django folds a header too long for one line before its value, leaving a leading space.
        assert [v.strip() for v in email.get_all(name)] == [value]
    assert email["Subject"] == "Welcome"
    assert email.get_content().strip() == "Hello"
    [record] = local_ses.messages()
    assert f"<{UNSUBSCRIBE_URL}>" in record["raw"]  # folded between name and value, never inside the URL
    assert ["List-Unsubscribe", LIST_HEADERS["List-Unsubscribe"]] in record["headers"]
    assert record["destination"]["to"] == ["ann@example.com"]
    assert message.anymail_status.message_id == record["id"]
    assert message.anymail_status.recipients["ann@example.com"].status == "queued"


def test_a_simple_send_records_its_parts_and_headers(local_ses: SesEndpoint) -> None:
    response = ses_client(local_ses.url).send_email(
        FromEmailAddress="drip@example.com",
        ReplyToAddresses=["help@example.com"],
        ConfigurationSetName="tracking",
        Destination={"ToAddresses": ["ann@example.com"], "BccAddresses": ["audit@example.com"]},
        Content={
            "Simple": {
                "Subject": {"Data": "Hi"},
                "Body": {"Text": {"Data": "plain"}, "Html": {"Data": "<b>html</b>"}},
                "Headers": [{"Name": "List-Id", "Value": "x.example.com"}],
            }
        },
    )

    [record] = local_ses.messages()
    assert record["id"] == response["MessageId"]
    assert (record["kind"], record["subject"], record["text"], record["html"]) == (
        "simple",
        "Hi",
        "plain",
        "<b>html</b>",
    )
    assert record["headers"] == [["List-Id", "x.example.com"]]
    assert record["destination"] == {"to": ["ann@example.com"], "cc": [], "bcc": ["audit@example.com"]}
    assert (record["from"], record["reply_to"], record["configuration_set"]) == (
        "drip@example.com",
        ["help@example.com"],
        "tracking",
    )


def test_a_template_send_records_the_template_as_it_was_at_send_time(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    client = ses_client(local_ses.url)
    client.send_email(
        FromEmailAddress="drip@example.com",
        Destination={"ToAddresses": ["ann@example.com"]},
        Content={"Template": {"TemplateName": "welcome", "TemplateData": '{"name": "Ann"}'}},
    )
    client.update_email_template(TemplateName="welcome", TemplateContent={**TEMPLATE, "Subject": "Changed"})

    [record] = local_ses.messages()
    assert (record["kind"], record["template_name"], record["template"]) == ("template", "welcome", TEMPLATE)
    assert record["template_data"] == {"name": "Ann"}
    assert client.get_email_template(TemplateName="welcome")["TemplateContent"]["Subject"] == "Changed"


def test_templates_can_be_created_read_updated_and_deleted(local_ses: SesEndpoint) -> None:
    client = ses_client(local_ses.url)
    client.create_email_template(TemplateName="a b/c", TemplateContent=TEMPLATE)
    with pytest.raises(client.exceptions.AlreadyExistsException):
        client.create_email_template(TemplateName="a b/c", TemplateContent=TEMPLATE)
    assert client.get_email_template(TemplateName="a b/c")["TemplateContent"] == TEMPLATE

    client.delete_email_template(TemplateName="a b/c")

    for call in (client.get_email_template, client.delete_email_template):
        with pytest.raises(client.exceptions.NotFoundException):
            call(TemplateName="a b/c")
    with pytest.raises(client.exceptions.NotFoundException):
        client.update_email_template(TemplateName="a b/c", TemplateContent=TEMPLATE)


def test_an_anymail_template_send_is_one_send_bulk_email_with_per_recipient_headers(
    local_ses: SesEndpoint, welcome_template: dict[str, str], settings: Any
) -> None:
    settings.ANYMAIL = {**settings.ANYMAIL, "AMAZON_SES_CONFIGURATION_SET_NAME": "tracking"}
    recipients = ["ann@example.com", "bob@example.com", "cy@example.com"]
    message = bulk_message(recipients, reply_to=["help@example.com"], headers={"List-Id": "welcome.example.com"})
    message.merge_global_data = {"company": "Acme"}
    message.envelope_sender = "bounces@example.com"

    assert message.send() == 1

    assert local_ses.stats()["by_operation"] == {"CreateEmailTemplate": 1, "SendBulkEmail": 1}
    records = local_ses.messages()
    assert [r["destination"]["to"] for r in records] == [[addr] for addr in recipients]
    for n, record in enumerate(records):
        assert record["kind"] == "bulk"
        assert record["template_name"] == "welcome"
        assert record["template"] == TEMPLATE
        assert record["template_data"] == {"name": f"User {n}"}
        assert record["default_template_data"] == {"company": "Acme"}
        assert record["headers"] == [
            ["List-Id", "welcome.example.com"],
            ["List-Unsubscribe", f"<https://trickle.example.com/u/{n}/>"],
        ]
        assert record["from"] == "Acme <drip@example.com>"
        assert record["reply_to"] == ["help@example.com"]
        assert record["configuration_set"] == "tracking"
        assert record["feedback_forwarding"] == "bounces@example.com"
    statuses = message.anymail_status.recipients
    assert {addr: statuses[addr].message_id for addr in recipients} == {
        r["destination"]["to"][0]: r["id"] for r in records
    }
    assert {s.status for s in statuses.values()} == {"queued"}
    assert message.anymail_status.message_id == {r["id"] for r in records}


def test_a_rejected_recipient_in_a_bulk_send_fails_alone(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    local_ses.configure(reject=["Bob@Example.com"])
    message = bulk_message(["ann@example.com", "bob@example.com"])

    message.send()

    statuses = message.anymail_status.recipients
    assert statuses["ann@example.com"].status == "queued"
    assert (statuses["bob@example.com"].status, statuses["bob@example.com"].message_id) == ("failed", None)
    assert [r["destination"]["to"] for r in local_ses.messages()] == [["ann@example.com"]]
    assert local_ses.stats()["rejected"] == 1


def test_anymail_raises_when_every_bulk_entry_is_rejected(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    local_ses.configure(reject=["ann@example.com", "bob@example.com"])

    with pytest.raises(AnymailAPIError, match="suppression list"):
        bulk_message(["ann@example.com", "bob@example.com"]).send()

    assert local_ses.messages() == []


def test_a_rejected_single_send_is_a_permanent_message_rejected(local_ses: SesEndpoint) -> None:
    local_ses.configure(reject=["ann@example.com"])

    with pytest.raises(AnymailAPIError) as caught:
        EmailMessage("Hi", "x", "drip@example.com", ["Ann <ann@example.com>"]).send()

    cause = caught.value.__cause__
    assert isinstance(cause, ClientError)
    assert cause.response["Error"]["Code"] == "MessageRejected"
    assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert local_ses.messages() == []


def test_throttling_surfaces_as_a_429_too_many_requests_and_records_nothing(local_ses: SesEndpoint) -> None:
    local_ses.configure(throttle_ratio=1.0)

    with pytest.raises(AnymailAPIError) as caught:
        EmailMessage("Hi", "x", "drip@example.com", ["ann@example.com"], headers=LIST_HEADERS).send()

    cause = caught.value.__cause__
    assert type(cause).__name__ == "TooManyRequestsException"
    assert isinstance(cause, ClientError)
    assert cause.response["Error"]["Code"] == "TooManyRequestsException"
    assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    # anymail also keeps botocore's parsed error on the exception itself (status_code stays None).
    assert caught.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert local_ses.messages() == []
    assert local_ses.stats()["throttled"] == 1


def test_a_server_error_surfaces_as_a_500_internal_failure_and_records_nothing(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    local_ses.configure(error_ratio=1.0)

    with pytest.raises(AnymailAPIError) as caught:
        bulk_message(["ann@example.com"]).send()

    cause = caught.value.__cause__
    assert isinstance(cause, ClientError)
    assert cause.response["Error"]["Code"] == "InternalFailure"
    assert cause.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert local_ses.messages() == []


def test_botocore_retries_a_throttled_call_and_it_is_recorded_once(local_ses: SesEndpoint) -> None:
    # With seed 3 the first draw is below 0.5 and the second above: throttled once, then accepted.
    local_ses.configure(throttle_ratio=0.5, seed=3)
    client = ses_client(local_ses.url, retries={"mode": "standard", "total_max_attempts": 3})

    response = client.send_email(
        FromEmailAddress="drip@example.com",
        Destination={"ToAddresses": ["ann@example.com"]},
        Content={"Raw": {"Data": b"From: drip@example.com\r\nTo: ann@example.com\r\nSubject: x\r\n\r\nhi"}},
    )

    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert [r["id"] for r in local_ses.messages()] == [response["MessageId"]]
    assert local_ses.stats()["throttled"] == 1


def test_an_unknown_template_is_not_found(local_ses: SesEndpoint) -> None:
    with pytest.raises(AnymailAPIError) as caught:
        bulk_message(["ann@example.com"]).send()

    assert type(caught.value.__cause__).__name__ == "NotFoundException"
    assert local_ses.messages() == []


def test_more_than_fifty_bulk_entries_are_a_bad_request(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    client = ses_client(local_ses.url)

    with pytest.raises(client.exceptions.BadRequestException):
        client.send_bulk_email(
            FromEmailAddress="drip@example.com",
            DefaultContent={"Template": {"TemplateName": "welcome"}},
            BulkEmailEntries=[{"Destination": {"ToAddresses": [f"u{n}@example.com"]}} for n in range(51)],
        )
    assert local_ses.messages() == []


def test_delayed_calls_overlap(local_ses: SesEndpoint) -> None:
    local_ses.configure(delay_ms=300)
    client = ses_client(local_ses.url, max_pool_connections=8)

    def send(n: int) -> None:
        client.send_email(
            FromEmailAddress="drip@example.com",
            Destination={"ToAddresses": [f"u{n}@example.com"]},
            Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "x"}}}},
        )

    started = time.monotonic()
    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert time.monotonic() - started < 1.5  # eight serial calls would take 2.4 s
    assert len(local_ses.messages()) == 8


def test_the_control_api_reads_clears_and_configures(local_ses: SesEndpoint, welcome_template: dict[str, str]) -> None:
    bulk_message(["ann@example.com"]).send()

    assert http(local_ses, "GET", "/_ses/messages")[1][0]["destination"]["to"] == ["ann@example.com"]
    status, page = http(local_ses, "GET", "/_ses/")
    assert status == 200
    assert "ann@example.com" in page
    assert http(local_ses, "GET", f"/_ses/messages/{local_ses.messages()[0]['id']}")[0] == 200
    assert http(local_ses, "GET", "/_ses/messages/nope")[0] == 404
    assert http(local_ses, "GET", "/_ses/stats")[1]["accepted"] == 1
    assert http(local_ses, "DELETE", "/_ses/messages") == (200, {})
    assert local_ses.messages() == []

    status, config = http(local_ses, "POST", "/_ses/config", {"delay_ms": 5, "reject": ["x@example.com"], "seed": 1})
    assert status == 200
    assert (config["delay_ms"], config["reject"]) == (5, ["x@example.com"])
    assert http(local_ses, "POST", "/_ses/config", {"throttle_ratio": 2})[0] == 400
    assert http(local_ses, "POST", "/_ses/config", {"nope": 1})[0] == 400


def test_the_message_page_shows_the_template_and_data_when_it_cannot_render(
    local_ses: SesEndpoint, welcome_template: dict[str, str]
) -> None:
    bulk_message(["ann@example.com"]).send()

    status, page = http(local_ses, "GET", f"/_ses/messages/{local_ses.messages()[0]['id']}")

    assert status == 200
    # Either rendered by campaigns.templating or shown raw with its data: the name is there.
    assert "User 0" in page


def test_anymail_reads_the_endpoint_at_send_time(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ses import _point_django_at

    first, second = start(), start()
    try:
        for endpoint in (first, second):
            _point_django_at(settings, monkeypatch, endpoint.url)
            EmailMessage("Hi", "x", "drip@example.com", ["ann@example.com"]).send()
    finally:
        first.stop()
        second.stop()

    assert (len(first.messages()), len(second.messages())) == (1, 1)
