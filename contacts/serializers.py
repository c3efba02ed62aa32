"""Validation and shape of contacts in the API. Writing happens in contacts/services.py."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.models import Contact
from contacts.normalize import InvalidValue, clean_email, clean_phone
from crm.api import ErrorDetailSerializer, StrictCharField, check_text

MAX_BATCH = 1000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_TEXT = 2000
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SOURCE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SCALARS = (str, int, float, bool)


# A plain ASCII dot-atom local part (RFC 5322), which email validation leaves as it is.
DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> tuple[str, str]:
    """(normalised domain, "") or ("", error message): validating the domain is most of the cost of
    validating an address, and a batch repeats a few domains many times."""
    try:
        return clean_email(f"a@{domain}").rsplit("@", 1)[1], ""
    except InvalidValue as exc:
        return "", str(exc)


def _clean_email_fast(text: str) -> str:
    """clean_email, with the domain check cached for the common shape of address."""
    candidate = text.strip()
    local, at, domain = candidate.rpartition("@")
    if at and len(local) <= 64 and domain.isascii() and DOT_ATOM.match(local):
        normalized, error = _checked_domain(domain)
        if error:
            raise InvalidValue(error)
        address = f"{local}@{normalized}"
        if len(address) <= 254:
            return address
    return clean_email(text)


@extend_schema_field(OpenApiTypes.EMAIL)
class ContactEmailField(serializers.Field):
    default_error_messages = {"invalid": "Enter an email address as a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        check_text(data)
        try:
            return _clean_email_fast(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field({"type": "string", "example": "+35699123456", "nullable": True})
class PhoneField(serializers.Field):
    """Any common spelling in; E.164 out. Without a country code the number is read in
    PHONE_DEFAULT_REGION, and refused when that is not set."""

    default_error_messages = {"invalid": "Enter a phone number as a string."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return True, ""
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        check_text(data)
        if len(data) > 64:
            raise serializers.ValidationError("Enter a valid phone number: it is too long.")
        try:
            return clean_phone(data, region=settings.PHONE_DEFAULT_REGION or None)
        except InvalidValue as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "nullable": True,
            "oneOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}},
            ],
        },
        "example": {"language": "en", "plan": "pro", "seats": 5},
    }
)
class AttributesField(serializers.Field):
    """A JSON object of custom fields. Values are strings, numbers, booleans or lists of those;
    on write, a key set to null is removed."""

    default_error_messages = {"invalid": "Expected a JSON object of custom fields."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            self.fail("invalid")
        if len(data) > MAX_ATTRIBUTES:
            raise serializers.ValidationError(f"At most {MAX_ATTRIBUTES} attributes are allowed.")
        errors: dict[str, list[str]] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not ATTRIBUTE_KEY.match(key):
                errors[str(key)[:64]] = ["Attribute names are 1-64 letters, digits, '_' or '-'."]
                continue
            problem = _attribute_value_problem(value)
            if problem:
                errors[key] = [problem]
        if errors:
            raise serializers.ValidationError(errors)
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


def _attribute_value_problem(value: Any, *, nested: bool = False) -> str | None:
    if value is None and not nested:
        return None
    if isinstance(value, list) and not nested:
        if len(value) > MAX_ATTRIBUTES:
            return f"A list may hold at most {MAX_ATTRIBUTES} values."
        for item in value:
            problem = _attribute_value_problem(item, nested=True)
            if problem:
                return problem
        return None
    if not isinstance(value, SCALARS):
        return "Values must be strings, numbers, booleans, or lists of those (null removes the key)."
    if isinstance(value, float) and not math.isfinite(value):
        return "Numbers must be finite."
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_TEXT:
            return f"Text values are at most {MAX_ATTRIBUTE_TEXT} characters."
        try:
            check_text(value)
        except serializers.ValidationError as exc:
            return str(exc.detail[0])
    return None


class NullableTextField(StrictCharField):
    """null clears the field (stored as an empty string)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data is None:
            return True, ""
        return super().validate_empty_values(data)


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, naming them, instead of silently ignoring a typo."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = {
                str(name): ["This field is read-only." if name in READ_ONLY else "Unknown field."]
                for name in data
                if name not in self.fields or self.fields[name].read_only
            }
            if unknown:
                raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)


READ_ONLY = {"id", "created_at", "updated_at"}


class ContactWriteSerializer(StrictSerializer):
    """What a client may send to create or update a contact. Omitted fields are left as they are."""

    email = ContactEmailField()
    name = NullableTextField(required=False, max_length=200)
    phone = PhoneField(required=False)
    company = NullableTextField(required=False, max_length=200)
    attributes = AttributesField(required=False)
    source = StrictCharField(
        required=False,
        max_length=64,
        help_text="api, form, import, admin, or your own label such as a form's name (letters, digits, _ . -).",
    )
    status = serializers.ChoiceField(choices=Contact.Status.choices, required=False)
    resubscribe = serializers.BooleanField(
        required=False,
        write_only=True,
        help_text="Lift this address's suppression (an unsubscribe, bounce or complaint) and mark it "
        "subscribed. The only way back for a suppressed address; recorded with time and source.",
    )

    def validate_source(self, value: str) -> str:
        if not SOURCE.match(value):
            raise serializers.ValidationError("Use 1-64 letters, digits, '_', '.' or '-'.")
        return value


class ContactSerializer(serializers.Serializer):
    """A contact as the API returns it. Declared rather than a ModelSerializer, which introspects
    the model on every instantiation: this is on the path of every request."""

    id = serializers.IntegerField(read_only=True)
    email = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    phone = serializers.CharField(read_only=True, help_text="E.164, or empty.")
    company = serializers.CharField(read_only=True)
    attributes = AttributesField(read_only=True)
    source = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=Contact.Status.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class AnyJSONField(serializers.Field):
    """Any parsed JSON value, untouched (DRF's JSONField re-encodes each value to check it)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


def contact_data(contact: Contact) -> dict[str, Any]:
    """The API representation of a contact (one shared serializer: it keeps no state)."""
    return _CONTACT.to_representation(contact)


class BatchRequestSerializer(StrictSerializer):
    """The envelope only: each item is validated on its own, so one bad item never blocks the others."""

    contacts = serializers.ListField(
        child=AnyJSONField(allow_null=True),
        min_length=1,
        max_length=MAX_BATCH,
        help_text="1 to 1,000 contacts.",
    )


class BatchRequestDocSerializer(serializers.Serializer):
    contacts = ContactWriteSerializer(many=True, min_length=1, max_length=MAX_BATCH)


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the request.")
    status = serializers.ChoiceField(choices=["created", "updated", "error"])
    id = serializers.IntegerField(allow_null=True)
    email = serializers.CharField(allow_null=True)
    subscription = serializers.ChoiceField(
        choices=Contact.Status.choices,
        allow_null=True,
        help_text="The contact's status after the write: `unsubscribed` for a suppressed address.",
    )
    error = ErrorDetailSerializer(allow_null=True)


class BatchResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    errors = serializers.IntegerField()
    results = BatchResultSerializer(many=True)


_CONTACT = ContactSerializer()
