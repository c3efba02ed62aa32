"""Query-string filters for listing contacts."""

from __future__ import annotations

import json
import math
from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform
from rest_framework import serializers

from contacts.models import Contact
from contacts.normalize import email_key, phone_digits
from contacts.serializers import ATTRIBUTE_KEY

ATTRIBUTE_PREFIX = "attributes."
# Fewer digits than this in a search are too common in phone numbers to mean one.
MIN_PHONE_DIGITS = 4


class ContactFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(method="filter_email", help_text="Exact address, any letter case.")
    status = django_filters.ChoiceFilter(choices=Contact.Status.choices)
    source = django_filters.CharFilter(help_text="Exact source label, e.g. api or pricing_wizard.")
    search = django_filters.CharFilter(
        method="filter_search",
        help_text="Matches name, email or company (substring, any case) or phone (any spelling: "
        "'+356 9912 3456' and '99123456' both find +35699123456).",
    )

    class Meta:
        model = Contact
        fields: list[str] = []

    def filter_email(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        return queryset.filter(email_key=email_key(value))

    def filter_search(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        text = value.strip()
        if not text:
            return queryset
        match = Q(name__icontains=text) | Q(email_key__contains=text.lower()) | Q(company__icontains=text)
        # A national spelling (0xx…) drops the trunk zero that E.164 does not have.
        digits = phone_digits(text).lstrip("0")
        if len(digits) >= MIN_PHONE_DIGITS:
            match |= Q(phone_digits__contains=digits)
        return queryset.filter(match)

    def filter_queryset(self, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        queryset = super().filter_queryset(queryset)
        params = [param for param in self.data if param.startswith(ATTRIBUTE_PREFIX)]
        for index, param in enumerate(params):
            value = self.data[param]
            key = param[len(ATTRIBUTE_PREFIX) :]
            if not ATTRIBUTE_KEY.match(key):
                raise serializers.ValidationError({param: ["Attribute names are 1-64 letters, digits, '_' or '-'."]})
            if "\x00" in value:
                raise serializers.ValidationError({param: ["Null characters are not allowed."]})
            alias = f"_attribute_{index}"
            queryset = queryset.alias(**{alias: KeyTransform(key, "attributes")}).filter(
                _any_of(alias, _candidates(value))
            )
        return queryset


def _candidates(value: str) -> list[Any]:
    """A query string is text, but the stored attribute may be a number or boolean: `seats=5`
    should find {"seats": 5} as well as {"seats": "5"}."""
    out: list[Any] = [value]
    try:
        parsed = json.loads(value, parse_constant=lambda name: None)
    except ValueError:
        return out
    if isinstance(parsed, bool | int) or (isinstance(parsed, float) and math.isfinite(parsed)):
        out.append(parsed)
    return out


def _any_of(alias: str, values: list[Any]) -> Q:
    match = Q()
    for value in values:
        match |= Q(**{alias: value})
    return match
