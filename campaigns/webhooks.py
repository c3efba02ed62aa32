"""`POST /webhooks/ses/`: Amazon SNS notifications carrying SES events (see campaigns/ses_events.py)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from campaigns import ses_events
from crm.errors import error_body

logger = logging.getLogger(__name__)

# An SNS message is at most 256 KB; the envelope and base64 add a little.
MAX_SNS_BODY_BYTES = 512 * 1024


@csrf_exempt  # SNS sends no cookies and no CSRF token: the SNS signature is the authentication.
@require_POST
def ses_webhook(request: HttpRequest) -> JsonResponse:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > min(MAX_SNS_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE):
        return JsonResponse(error_body("request_too_large", "The body is larger than an SNS message."), status=413)
    try:
        body = request.read(MAX_SNS_BODY_BYTES + 1)
    except OSError:
        return JsonResponse(error_body("invalid", "The body could not be read."), status=400)
    if len(body) > MAX_SNS_BODY_BYTES:
        return JsonResponse(error_body("request_too_large", "The body is larger than an SNS message."), status=413)
    try:
        handled = ses_events.handle_sns_body(body)
    except ses_events.SnsRejected as exc:
        logger.warning("SES webhook refused (%s): %s", exc.code, exc.message)
        return JsonResponse(error_body(exc.code, exc.message), status=exc.status)
    return JsonResponse({"status": handled.status})


urlpatterns = [path("ses/", ses_webhook, name="ses-webhook")]
