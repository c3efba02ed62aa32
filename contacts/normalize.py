"""Normalising the two identifiers people type in many spellings: email addresses and phones."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class InvalidValue(ValueError):
    """A value that cannot be normalised; the message is meant for the API user."""


def email_key(email: str) -> str:
    """The dedupe key: `Ana@X.com` and ` ana@x.com` are one contact.

    The whole address is case-folded. RFC 5321 lets a server treat the local part as case
    sensitive, but no mainstream mailbox provider does, and two contacts differing only in case
    are a duplicate far more often than two people.
    """
    return email.strip().lower()


def clean_email(email: str) -> str:
    """Validate syntax (no DNS look-up) and return the address as it should be stored."""
    if not isinstance(email, str):
        raise InvalidValue("Enter an email address as a string.")
    candidate = email.strip()
    if not candidate:
        raise InvalidValue("This field may not be blank.")
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidValue(f"Enter a valid email address: {exc}") from exc
    return result.normalized


def clean_phone(raw: str, *, region: str | None = None) -> str:
    """Return the number in E.164 (`+35699123456`); a number without `+` is read in `region`."""
    if not raw or not raw.strip():
        return ""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(f"Enter a valid phone number ({exc}).") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidValue("Enter a valid phone number: it has the wrong number of digits.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_digits(text: str) -> str:
    """Digits only, for searching: `+356 9912 3456`, `(9912) 3456` and `99123456` all match."""
    return "".join(ch for ch in text if ch.isdigit())
