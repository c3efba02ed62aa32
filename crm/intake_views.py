"""Public form endpoint `/f/<key>/` and the CSV export of the contact API."""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from contacts.models import Contact
from crm import exports
from crm.api import ErrorSerializer
from crm.errors import error_body
from crm.intake import SubmissionInvalid, clean_submission, honeypot_filled, rate_limited, submit_form
from crm.models import Form

RECEIVED = {"status": "received"}

FORM_KEY_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")


def _error(status: int, code: str, message: str, fields: dict[str, list[str]] | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, fields), status=status)


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or behind a trusted reverse proxy the address it appended to X-Forwarded-For."""
    if settings.FORM_TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _with_cors(response: HttpResponseBase, form: Form, origin: str) -> HttpResponseBase:
    response["Vary"] = "Origin"
    if form.allows_origin(origin):
        # The exact origin, never `*`: only the form's own sites may read the answer.
        response["Access-Control-Allow-Origin"] = origin
    return response


def _reject_bad_text(data: dict[str, Any]) -> None:
    """PostgreSQL refuses NUL characters and lone surrogates: a 400, not a 500 at insert time."""

    def bad(text: str) -> bool:
        if "\x00" in text:
            return True
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False

    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        if bad(str(key)) or any(isinstance(v, str) and bad(v) for v in values):
            name = key if not bad(str(key)) else "non_field_errors"
            raise SubmissionInvalid({name: ["Contains characters that are not valid text."]})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(request: HttpRequest) -> dict[str, Any]:
    """The submission as a flat dict, from JSON or form encoding. Raises SubmissionInvalid."""
    content_type = request.content_type or ""
    if content_type in ("application/json", "text/plain") or content_type.endswith("+json"):
        try:
            data = json.loads(request.body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise SubmissionInvalid({"non_field_errors": ["The body is not valid UTF-8 JSON."]}) from exc
        if not isinstance(data, dict):
            raise SubmissionInvalid({"non_field_errors": ["Send a JSON object of field names to values."]})
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        data = {key: values[0] if len(values) == 1 else values for key, values in request.POST.lists()}
    else:
        raise SubmissionInvalid(
            {"non_field_errors": ["Send application/json, application/x-www-form-urlencoded or multipart/form-data."]}
        )
    _reject_bad_text(data)
    return data


@csrf_exempt
def form_endpoint(request: HttpRequest, key: str) -> HttpResponseBase:
    # Keys are `f_` + URL-safe base64; anything else (a NUL byte breaks a PostgreSQL query) is unknown.
    if not FORM_KEY_RE.match(key):
        return _error(404, "not_found", "No active form with this key.")
    form = Form.objects.select_related("workspace").filter(key=key, active=True).first()
    if form is None:
        return _error(404, "not_found", "No active form with this key.")
    origin = request.headers.get("Origin", "")
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        if form.allows_origin(origin):
            response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = "Content-Type, Idempotency-Key"
            response["Access-Control-Max-Age"] = "600"
        return _with_cors(response, form, origin)
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "Submit the form with POST.")
        response["Allow"] = "POST, OPTIONS"
        return response
    return _with_cors(_submit(request, form, origin), form, origin)


def _submit(request: HttpRequest, form: Form, origin: str) -> HttpResponseBase:
    # A browser on a site not in the list: form posts are "simple" requests that skip the CORS
    # preflight, so refusing here (not only withholding the CORS header) is what enforces the list.
    if origin and not form.allows_origin(origin):
        return _error(403, "origin_not_allowed", f"Origin {origin[:200]} may not post to this form.")
    ip = client_ip(request)
    wait = rate_limited(ip=ip)
    if wait is not None:
        response = _error(429, "throttled", "Too many submissions from this address; try again later.")
        response["Retry-After"] = str(int(wait + 0.999))
        return response
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > settings.FORM_MAX_BODY_BYTES:
        limit = settings.FORM_MAX_BODY_BYTES
        return _error(413, "request_too_large", f"A form submission may be at most {limit} bytes.")
    try:
        data = parse_body(request)
        if honeypot_filled(form=form, data=data):
            return _received(request, form)  # looks like success so the bot learns nothing
        submission = clean_submission(form=form, data=data)
    except SubmissionInvalid as exc:
        return _error(400, "invalid", str(exc), exc.fields)
    except RequestDataTooBig:
        return _error(413, "request_too_large", "The request body is too large.")
    except (TooManyFieldsSent, MultiPartParserError, SuspiciousOperation, UnicodeDecodeError):
        return _error(400, "invalid", "The form body could not be read.", {"non_field_errors": ["Unreadable body."]})
    submit_form(
        form=form,
        submission=submission,
        ip=ip if ip != "unknown" else None,
        user_agent=request.headers.get("User-Agent", ""),
    )
    return _received(request, form)


def _received(request: HttpRequest, form: Form) -> HttpResponseBase:
    if form.redirect_url and request.content_type != "application/json":
        # A plain HTML <form> post: send the visitor on to the thank-you page.
        return HttpResponseRedirect(form.redirect_url, status=303)
    return JsonResponse(RECEIVED, status=200)


class ContactExportView(APIView):
    """`GET /api/v1/contacts/export.csv?status=subscribed&attributes.plan=pro`: the filtered
    contacts of the key's workspace as a streamed CSV."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is always CSV; `Accept: text/csv` must not be answered 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="contacts_export_csv",
        tags=["contacts"],
        summary="Export contacts as CSV",
        parameters=[
            OpenApiParameter("email", str, description="Exact address, any letter case."),
            OpenApiParameter("status", str, enum=list(Contact.Status.values)),
            OpenApiParameter("source", str, description="Exact source label."),
            OpenApiParameter("search", str, description="Name, email, company or phone."),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="Header row, then one row per contact."),
            400: OpenApiResponse(ErrorSerializer, description="A filter is invalid."),
            401: OpenApiResponse(ErrorSerializer, description="Missing, unknown or revoked API key."),
            429: OpenApiResponse(ErrorSerializer, description="Rate limit exceeded; see Retry-After."),
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        workspace = request.auth.workspace
        try:
            contacts = exports.filter_contacts(Contact.objects.filter(workspace=workspace), request.query_params)
        except exports.FilterInvalid as exc:
            raise exceptions.ValidationError({exc.field: [exc.message]}) from exc
        return exports.streaming_response(contacts, filename=f"{workspace.slug}-contacts.csv")
