from __future__ import annotations

import pytest

from contacts.normalize import InvalidValue, clean_email
from contacts.serializers import _clean_email_fast

ADDRESSES = [
    "ana@x.com",
    "Ana@X.COM",
    " ana@x.com ",
    "a.b+tag@x.co.uk",
    "a/b=c@x.com",
    "a..b@x.com",
    ".a@x.com",
    "a@b",
    "a@localhost",
    "a@x.test",
    "a@x.123",
    "a@[1.2.3.4]",
    '"a b"@x.com',
    "a@-x.com",
    "a@x..com",
    "a@x_y.com",
    "a@bücher.ch",
    "ü@x.com",
    "a" * 65 + "@x.com",
    "a" * 64 + "@x.com",
    "a@" + ("b" * 60 + ".") * 4 + "com",
    "a@@x.com",
    "a@x.invalid",
]


def _outcome(function: object, address: str) -> tuple[str, str]:
    try:
        return "ok", function(address)  # type: ignore[operator]
    except InvalidValue as exc:
        return "error", str(exc)


@pytest.mark.parametrize("address", ADDRESSES)
def test_the_cached_email_check_accepts_and_refuses_exactly_what_clean_email_does(address: str) -> None:
    assert _outcome(_clean_email_fast, address) == _outcome(clean_email, address)
