"""Unsubscribe, re-subscribe and suppress: the workflows that decide whether an address is mailed.

Guarantees:
- Every path that stops mail writes a Suppression row (keyed hash of the address) before anything
  else, so the address stays suppressed even if the contact is deleted and later created again.
- Queued deliveries for the contact become `skipped` in the same transaction.
- A contact carrying business records is never deleted, whatever the workspace setting.
- Every call is idempotent: repeating it changes nothing and writes no second timeline entry.
- The only way back is `resubscribe()` / `lift_suppression()`, which records who and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from contacts.models import Contact
from contacts.suppression import Suppression, suppression_hash, token_hash
from crm.models import Activity, Workspace

_ACTIVITY_FOR_REASON = {
    Suppression.Reason.UNSUBSCRIBE: Activity.Kind.UNSUBSCRIBED,
    Suppression.Reason.MANUAL: Activity.Kind.UNSUBSCRIBED,
    Suppression.Reason.BOUNCE: Activity.Kind.BOUNCED,
    Suppression.Reason.COMPLAINT: Activity.Kind.COMPLAINED,
}
_SUMMARY_FOR_REASON = {
    Suppression.Reason.UNSUBSCRIBE: "Unsubscribed",
    Suppression.Reason.MANUAL: "Suppressed manually",
    Suppression.Reason.BOUNCE: "Address bounced permanently: suppressed",
    Suppression.Reason.COMPLAINT: "Marked an email as spam: suppressed",
}


@dataclass(frozen=True)
class UnsubscribeOutcome:
    suppression: Suppression
    # True when this call changed something; False for a repeat (idempotent no-op).
    changed: bool
    contact_deleted: bool


def _skip_queued_deliveries(contact: Contact, *, why: str) -> int:
    from campaigns.models import Delivery

    return Delivery.objects.filter(contact=contact, status=Delivery.Status.QUEUED).update(
        status=Delivery.Status.SKIPPED, error=why
    )


def _ensure_suppression(
    *, workspace_id: int, email_hash: str, reason: str, source: str, token: str = ""
) -> tuple[Suppression, bool]:
    suppression, created = Suppression.objects.get_or_create(
        workspace_id=workspace_id,
        email_hash=email_hash,
        defaults={"reason": reason, "source": source[:100], "token_hash": token_hash(token) if token else ""},
    )
    if created:
        return suppression, True
    updates: list[str] = []
    # A complaint is the strongest signal there is: it wins over whatever suppressed the address first.
    if reason == Suppression.Reason.COMPLAINT and suppression.reason != reason:
        suppression.reason = reason
        updates.append("reason")
    if token and not suppression.token_hash:
        suppression.token_hash = token_hash(token)
        updates.append("token_hash")
    if updates:
        suppression.save(update_fields=updates)
    return suppression, bool("reason" in updates)


def _record(
    *,
    workspace_id: int,
    contact: Contact | None,
    kind: str,
    summary: str,
    actor: str,
    data: dict[str, Any],
) -> Activity:
    return Activity.objects.create(
        workspace_id=workspace_id, contact=contact, kind=kind, summary=summary[:300], actor=actor[:100], data=data
    )


@transaction.atomic
def unsubscribe(
    *,
    contact: Contact,
    source: str,
    reason: str = Suppression.Reason.UNSUBSCRIBE,
    actor: str = "",
) -> UnsubscribeOutcome:
    """Stop all mail to the contact's address in its workspace, then delete or keep the contact.

    `source` says how ("one-click", "unsubscribe-page", "admin:<user>", "api:<prefix>"). The contact
    is deleted when the workspace's `unsubscribe_behaviour` is `delete` and it carries no business
    records; otherwise it is kept with status `unsubscribed`.
    """
    # Lock the row so a double click (form and one-click racing) runs the workflow once.
    locked = Contact.objects.select_for_update().select_related("workspace").filter(pk=contact.pk).first()
    # When a racing request already unsubscribed and deleted it, the suppression is still ensured.
    target = locked or contact
    target.refresh_keys()
    suppression, created = _ensure_suppression(
        workspace_id=target.workspace_id,
        email_hash=target.email_hash,
        reason=reason,
        source=source,
        token=target.unsubscribe_token,
    )
    if locked is None:
        return UnsubscribeOutcome(suppression=suppression, changed=created, contact_deleted=True)
    contact = locked
    skipped = _skip_queued_deliveries(contact, why="unsubscribed")
    was_subscribed = contact.is_subscribed
    changed = created or was_subscribed or skipped > 0
    if changed:
        _record(
            workspace_id=contact.workspace_id,
            contact=contact,
            kind=_ACTIVITY_FOR_REASON.get(reason, Activity.Kind.UNSUBSCRIBED),
            summary=f"{_SUMMARY_FOR_REASON.get(reason, 'Unsubscribed')} ({source})",
            actor=actor or source,
            data={"email_hash": contact.email_hash, "source": source, "reason": reason, "skipped_deliveries": skipped},
        )
    delete = (
        contact.workspace.unsubscribe_behaviour == Workspace.UnsubscribeBehaviour.DELETE
        and not contact.has_business_records()
    )
    if delete:
        # The timeline entry survives with contact=NULL and the address hash in its data.
        contact.delete()
        return UnsubscribeOutcome(suppression=suppression, changed=True, contact_deleted=True)
    if was_subscribed:
        contact.status = Contact.Status.UNSUBSCRIBED
        contact.save(update_fields=["status", "updated_at"])
    return UnsubscribeOutcome(suppression=suppression, changed=changed, contact_deleted=False)


@transaction.atomic
def suppress_address(
    *,
    workspace: Workspace,
    email: str,
    reason: str,
    source: str,
    actor: str = "",
    data: dict[str, Any] | None = None,
) -> Suppression:
    """Suppress an address (a bounce, a complaint, an operator's decision) with or without a contact.

    An existing contact with that address is kept (never deleted: nobody asked to be forgotten),
    marked `unsubscribed`, and its queued deliveries are skipped.
    """
    email_hash = suppression_hash(workspace.pk, email)
    suppression, changed = _ensure_suppression(
        workspace_id=workspace.pk, email_hash=email_hash, reason=reason, source=source
    )
    contact = Contact.objects.select_for_update().filter(workspace=workspace).for_email(email).first()
    skipped = 0
    if contact is not None:
        skipped = _skip_queued_deliveries(contact, why=reason)
        if contact.is_subscribed:
            contact.status = Contact.Status.UNSUBSCRIBED
            contact.save(update_fields=["status", "updated_at"])
            changed = True
    # Bounces and complaints are events worth a timeline entry each; a repeated manual/unsubscribe
    # suppression of an already suppressed address is not.
    if changed or reason in (Suppression.Reason.BOUNCE, Suppression.Reason.COMPLAINT):
        _record(
            workspace_id=workspace.pk,
            contact=contact,
            kind=_ACTIVITY_FOR_REASON.get(reason, Activity.Kind.UNSUBSCRIBED),
            summary=f"{_SUMMARY_FOR_REASON.get(reason, 'Suppressed')} ({source})",
            actor=actor or source,
            data={"email_hash": email_hash, "source": source, "reason": reason, "skipped_deliveries": skipped}
            | (data or {}),
        )
    return suppression


@transaction.atomic
def lift_suppression(*, workspace: Workspace, email_hash: str, source: str, actor: str) -> bool:
    """Remove an address from the suppression list; True if it was on it. Recorded on the timeline."""
    deleted, _ = Suppression.objects.filter(workspace=workspace, email_hash=email_hash).delete()
    contact = Contact.objects.filter(workspace=workspace, email_hash=email_hash).first()
    if deleted:
        _record(
            workspace_id=workspace.pk,
            contact=contact,
            kind=Activity.Kind.RESUBSCRIBED,
            summary=f"Re-subscribed ({source})",
            actor=actor or source,
            data={"email_hash": email_hash, "source": source},
        )
    return bool(deleted)


@transaction.atomic
def resubscribe(*, contact: Contact, source: str, actor: str) -> Contact:
    """The explicit way back: lift the suppression and mark the contact `subscribed`.

    Callers must only do this on a clear request (the API's `"resubscribe": true`, an admin action);
    it is recorded with time, source and actor.
    """
    contact = Contact.objects.select_for_update().select_related("workspace").get(pk=contact.pk)
    contact.refresh_keys()
    lifted = lift_suppression(workspace=contact.workspace, email_hash=contact.email_hash, source=source, actor=actor)
    if not contact.is_subscribed:
        contact.status = Contact.Status.SUBSCRIBED
        contact.save(update_fields=["status", "updated_at"])
        if not lifted:
            _record(
                workspace_id=contact.workspace_id,
                contact=contact,
                kind=Activity.Kind.RESUBSCRIBED,
                summary=f"Re-subscribed ({source})",
                actor=actor or source,
                data={"email_hash": contact.email_hash, "source": source},
            )
    return contact
