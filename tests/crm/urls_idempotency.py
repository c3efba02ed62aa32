"""A stand-in for the contact API's POST views: the idempotency rules must hold for any DRF view."""

from __future__ import annotations

import threading

from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.models import Contact

# Set by a test to hold the view open, to see a duplicate arrive while the first is in flight.
release = threading.Event()
entered = threading.Event()


class CreateContactView(APIView):
    def post(self, request: Request) -> Response:
        email = request.data.get("email", "")
        if not email:
            return Response({"error": {"code": "invalid", "message": "email: required", "fields": {}}}, status=400)
        contact = Contact.objects.create(workspace=request.auth.workspace, email=email)
        return Response({"id": contact.pk, "email": contact.email}, status=201)


class SlowView(APIView):
    def post(self, request: Request) -> Response:
        entered.set()
        release.wait(timeout=10)
        return Response({"done": True}, status=201)


urlpatterns = [
    path("api/v1/test-contacts/", CreateContactView.as_view()),
    path("api/v1/slow/", SlowView.as_view()),
    path("", include("config.urls")),
]
