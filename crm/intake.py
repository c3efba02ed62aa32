"""Website form intake: validate a public submission and fold it into the contact record.

The contract of `submit_form`: it creates the contact or fills only its empty fields (never
overwriting what is known, attributes included), records consent as given on this submission, and
keeps the whole submission both as a `FormSubmission` and on the contact's activity timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.models import Contact
from contacts.normalize import InvalidValue, clean_email, clean_phone, email_key
from contacts.suppression import is_suppressed
from crm.models import Activity, Consent, Form, FormSubmission

# Values that count as a "yes" in the consent field. An HTML checkbox sends "on" when ticked.
AFFIRMATIVE = {"on", "yes", "y", "true", "1", "agree", "agreed", "granted", "accept", "accepted"}
CORE_FIELDS = ("email", "name", "phone", "company")
MAX_LENGTHS = {"name": 200, "company": 200}
MAX_FIELDS = 100
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 5000


class SubmissionInvalid(ValueError):
    """Bad input; `fields` maps each offending field to its messages."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields
        name, messages = next(iter(fields.items()))
        super().__init__(f"{name}: {messages[0]}")


@dataclass
class CleanSubmission:
    email: str
    name: str = ""
    phone: str = ""
    company: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    consent_value: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def is_affirmative(value: Any) -> bool:
    if value is True:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in AFFIRMATIVE


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def clean_submission(*, form: Form, data: dict[str, Any]) -> CleanSubmission:
    """Validate a parsed body (flat JSON object or form fields). Raises SubmissionInvalid."""
    errors: dict[str, list[str]] = {}
    if len(data) > MAX_FIELDS:
        raise SubmissionInvalid({"non_field_errors": [f"A form may send at most {MAX_FIELDS} fields."]})
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            errors.setdefault("non_field_errors", []).append(f"Field names must be 1 to {MAX_KEY_LENGTH} characters.")
            continue
        ok = _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))
        if not ok:
            errors[key] = ["Send a text value (or a list of them), not an object."]
            continue
        text_size = len(str(value))
        if text_size > MAX_VALUE_LENGTH:
            errors[key] = [f"Ensure this value has at most {MAX_VALUE_LENGTH} characters."]
            continue
        kept[key] = value
    if errors:
        raise SubmissionInvalid(errors)

    def text(name: str) -> str:
        value = kept.get(name)
        if isinstance(value, list):
            value = value[0] if value else ""
        return "" if value is None else str(value).strip()

    email = ""
    try:
        email = clean_email(text("email")) if "email" in kept else ""
        if not email:
            errors["email"] = ["This field is required."]
    except InvalidValue as exc:
        errors["email"] = [str(exc)]
    phone = ""
    try:
        phone = clean_phone(text("phone"))
    except InvalidValue as exc:
        errors["phone"] = [str(exc)]
    for name, limit in MAX_LENGTHS.items():
        if len(text(name)) > limit:
            errors[name] = [f"Ensure this field has no more than {limit} characters."]
    if errors:
        raise SubmissionInvalid(errors)

    skip = {*CORE_FIELDS, form.consent_field, form.honeypot_field}
    attributes = {k: v for k, v in kept.items() if k not in skip and v not in (None, "", [])}
    consent = kept.get(form.consent_field)
    if isinstance(consent, list):
        consent = consent[-1] if consent else None
    return CleanSubmission(
        email=email,
        name=text("name"),
        phone=phone,
        company=text("company"),
        attributes=attributes,
        consent_value=None if consent is None else str(consent)[:100],
        data={k: v for k, v in kept.items() if k != form.honeypot_field},
    )


def honeypot_filled(*, form: Form, data: dict[str, Any]) -> bool:
    value = data.get(form.honeypot_field)
    return value not in (None, "", [], False)


def parse_rate(rate: str) -> tuple[int, int]:
    """`"10/min"` → (10, 60)."""
    count, _, period = rate.partition("/")
    return int(count), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period.strip()[:1].lower()]


def rate_limited(*, ip: str) -> float | None:
    """Count one submission from `ip`; seconds to wait when over the limit, else None.

    A fixed window per IP with one atomic INCR in Redis (as crm/throttling.py), shared by all forms
    so one address cannot spray every form of every workspace."""
    limit, window = parse_rate(settings.FORM_RATE_LIMIT)
    now = timezone.now().timestamp()
    bucket = f"intake:ip:{ip}:{int(now // window)}"
    cache.add(bucket, 0, timeout=window + 1)
    try:
        count = cache.incr(bucket)
    except ValueError:  # expired between add and incr
        cache.add(bucket, 1, timeout=window + 1)
        count = 1
    if count <= limit:
        return None
    return max(1.0, (int(now // window) + 1) * window - now)


def create_form_contact(*, form: Form, submission: CleanSubmission) -> Contact:
    """The one place a form creates a contact: suppression checks (an address that unsubscribed
    before is created `unsubscribed`) belong here."""
    suppressed = is_suppressed(form.workspace, submission.email)
    return Contact.objects.create(
        workspace=form.workspace,
        email=submission.email,
        name=submission.name,
        phone=submission.phone,
        company=submission.company,
        attributes=submission.attributes,
        source=form.slug,
        # Filling in a form again is not a re-subscribe: suppression wins.
        status=Contact.Status.UNSUBSCRIBED if suppressed else Contact.Status.SUBSCRIBED,
    )


def _fill_empty(contact: Contact, submission: CleanSubmission) -> list[str]:
    changed = []
    for name in ("name", "phone", "company"):
        value = getattr(submission, name)
        if value and not getattr(contact, name):
            setattr(contact, name, value)
            changed.append(name)
    attributes = dict(contact.attributes or {})
    missing = {k: v for k, v in submission.attributes.items() if k not in attributes}
    if missing:
        contact.attributes = {**attributes, **missing}
        changed.append("attributes")
    return changed


@dataclass
class IntakeResult:
    contact: Contact
    submission: FormSubmission
    created: bool
    consent: Consent | None


def submit_form(
    *, form: Form, submission: CleanSubmission, ip: str | None = None, user_agent: str = ""
) -> IntakeResult:
    """Upsert the contact from a validated submission and record it (see the module docstring)."""
    now = timezone.now()
    with transaction.atomic():
        contacts = Contact.objects.select_for_update().filter(workspace=form.workspace)
        contact = contacts.filter(email_key=email_key(submission.email)).first()
        created = contact is None
        if contact is None:
            try:
                with transaction.atomic():
                    contact = create_form_contact(form=form, submission=submission)
            except IntegrityError:  # the same person submitted twice at once: the other one won
                contact = contacts.get(email_key=email_key(submission.email))
                created = False
        if not created:
            changed = _fill_empty(contact, submission)
            if changed:
                contact.save(update_fields=[*changed, "updated_at"])

        record = FormSubmission.objects.create(
            workspace=form.workspace,
            form=form,
            contact=contact,
            data=submission.data,
            ip=ip,
            user_agent=user_agent[:500],
            created_at=now,
        )
        consent = None
        if form.consent_text or submission.consent_value is not None:
            consent = Consent.objects.create(
                workspace=form.workspace,
                contact=contact,
                form=form,
                submission=record,
                granted=is_affirmative(submission.consent_value),
                text_shown=form.consent_text,
                value_received=submission.consent_value or "",
                ip=ip,
                recorded_at=now,
            )
        Activity.objects.create(
            workspace=form.workspace,
            contact=contact,
            kind=Activity.Kind.FORM_SUBMISSION,
            summary=f"Submitted the form {form.name}"[:300],
            data={
                "form": form.slug,
                "submission_id": record.pk,
                "fields": submission.data,
                "consent": None if consent is None else consent.granted,
            },
            actor=f"form:{form.slug}"[:100],
            occurred_at=now,
        )
    return IntakeResult(contact=contact, submission=record, created=created, consent=consent)
