"""The public unsubscribe pages behind the link in every email: `/u/<token>/`.

- GET shows a confirmation page and never changes anything: link scanners prefetch GETs.
- POST from that page's form unsubscribes (CSRF-checked like any form).
- RFC 8058 one-click: a POST whose body is `List-Unsubscribe=One-Click`, sent by a mailbox provider
  with no cookies and no CSRF token, unsubscribes and answers 200 with no redirect. Only that exact
  body skips the CSRF check. This is safe because CSRF defends ambient credentials (cookies), and
  this endpoint uses none: the 256-bit token in the URL is the only credential, for both paths.
"""

from __future__ import annotations

import re

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts.models import Contact
from contacts.suppression import Suppression, token_hash
from contacts.unsubscribe import unsubscribe

TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z")
ONE_CLICK_BODY = b"List-Unsubscribe=One-Click"
# What a hostile or broken body can raise while Django reads or parses it: too big, too many
# fields or files (SuspiciousOperation), broken multipart, a dropped connection, bad encodings.
BODY_ERRORS = (SuspiciousOperation, MultiPartParserError, OSError, ValueError)
# A one-click body is 26 bytes and the form's is under 200: anything much larger is not for us.
MAX_BODY_BYTES = 16 * 1024


def mask_email(email: str) -> str:
    """`ana@example.com` → `a***@example.com`: enough for the owner to recognise, little for others."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, f"unsubscribe/{template}", context, status=status)
    response["X-Robots-Tag"] = "noindex, nofollow"
    # Not "no-referrer": Chromium then sends `Origin: null` on the form POST and Django's CSRF origin
    # check refuses it. "same-origin" (Django's default) keeps the token out of any outside Referer.
    response["Referrer-Policy"] = "same-origin"
    return response


def _not_found(request: HttpRequest) -> HttpResponse:
    return _page(request, "not_found.html", {}, status=404)


def _is_one_click(request: HttpRequest, body: bytes) -> bool:
    # RFC 8058 allows application/x-www-form-urlencoded or multipart/form-data; senders differ on
    # the content type, so accept the exact body whatever it is labelled, or the parsed field.
    if body.strip() == ONE_CLICK_BODY:
        return True
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    try:
        return request.POST.get("List-Unsubscribe") == "One-Click"
    except BODY_ERRORS:
        # Malformed multipart, bad encodings, too many fields: not a one-click request.
        return False


def _csrf_ok(request: HttpRequest) -> bool:
    middleware = CsrfViewMiddleware(lambda r: HttpResponse())
    middleware.process_request(request)
    try:
        return middleware.process_view(request, _form_post_marker, (), {}) is None
    except BODY_ERRORS:
        return False


def _form_post_marker(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    """Stands for the form POST in the CSRF check (a view without csrf_exempt)."""
    return HttpResponse()


@csrf_exempt  # only the one-click body skips the check: the form path calls _csrf_ok() itself
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe_page(request: HttpRequest, token: str) -> HttpResponse:
    if not TOKEN_RE.match(token):
        return _not_found(request)
    contact = Contact.objects.select_related("workspace").filter(unsubscribe_token=token).first()
    if contact is None:
        used = Suppression.objects.select_related("workspace").filter(token_hash=token_hash(token)).first()
        if used is None:
            return _not_found(request)
        # The contact was deleted when it unsubscribed; a second click still gets a clear answer.
        return _page(request, "done.html", {"workspace": used.workspace, "masked": "", "already": True})
    context = {"workspace": contact.workspace, "masked": mask_email(contact.email), "token": token}
    if request.method in ("GET", "HEAD"):
        if not contact.is_subscribed:
            return _page(request, "done.html", {**context, "already": True})
        return _page(request, "confirm.html", context)

    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return _page(request, "confirm.html", {**context, "error": "too_large"}, status=413)
    try:
        body = request.body
    except BODY_ERRORS:
        body = b""
    one_click = _is_one_click(request, body)
    if not one_click and not _csrf_ok(request):
        # A stale or blocked cookie: show the button again (with a fresh cookie) instead of a bare 403.
        return _page(request, "confirm.html", {**context, "error": "csrf"}, status=403)
    already = not contact.is_subscribed
    unsubscribe(contact=contact, source="one-click" if one_click else "unsubscribe-page")
    return _page(request, "done.html", {**context, "already": already})
