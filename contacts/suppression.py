"""The suppression list: addresses a workspace must never mail again, stored only as keyed hashes.

An entry is an HMAC-SHA256, under `settings.SUPPRESSION_KEY`, of the workspace id and the
normalised address. Nobody holding the table alone can tell who unsubscribed, yet the workspace can
still answer "is this address suppressed?" for any address it is given, including one the contact
API creates anew after the original contact was deleted. Contacts carry the same hash
(`Contact.email_hash`), so enrollment can exclude suppressed addresses with one anti-join.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from django.conf import settings
from django.db import connection, models
from django.db.models import Exists, OuterRef
from django.utils import timezone

from contacts.normalize import email_key
from contacts.sql import pg_execute, text_array
from crm.models import Workspace


def suppression_hash(workspace_id: int, email: str) -> str:
    """The keyed hash of an address within one workspace (64 hex characters).

    The workspace id is inside the hash so two workspaces' lists cannot be joined to learn that the
    same person left both.
    """
    return suppression_hasher(workspace_id)(email)


def suppression_hasher(workspace_id: int) -> Callable[[str], str]:
    """`suppression_hash` for many addresses of one workspace: the HMAC's key schedule and the
    workspace prefix are computed once, each address costs a copy and an update."""
    base = hmac.new(settings.SUPPRESSION_KEY.encode(), f"{workspace_id}:".encode(), hashlib.sha256)

    def hash_of(email: str) -> str:
        mac = base.copy()
        mac.update(email_key(email).encode())
        return mac.hexdigest()

    return hash_of


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a plain hash is enough to recognise a used one without
    # keeping a working token after its contact is deleted.
    return hashlib.sha256(token.encode()).hexdigest()


class SuppressionQuerySet(models.QuerySet["Suppression"]):
    def for_workspace(self, workspace: Workspace | int) -> SuppressionQuerySet:
        workspace_id = workspace if isinstance(workspace, int) else workspace.pk
        return self.filter(workspace_id=workspace_id)

    def hashes(self) -> models.QuerySet:
        """The suppressed hashes, as a values queryset usable in `email_hash__in=` or a subquery."""
        return self.values("email_hash")

    def matching_contact(self, outer: str = "") -> Exists:
        """`Exists(...)` for a Contact queryset: true when the contact's address is suppressed.

        `outer` is the ORM path from the outer model to the Contact (empty when the outer model is
        Contact itself, "contact" from Enrollment or Delivery).
        """
        prefix = f"{outer}__" if outer else ""
        return Exists(
            self.filter(
                workspace_id=OuterRef(f"{prefix}workspace_id"),
                email_hash=OuterRef(f"{prefix}email_hash"),
            )
        )

    def hashes_in(self, *, workspace_id: int, hashes: list[str]) -> set[str]:
        """Which of `hashes` are suppressed in the workspace: one query, however many (the import
        asks about 5,000 at a time, bound server-side on PostgreSQL; see contacts/sql.py)."""
        if not hashes:
            return set()
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(self.model._meta.db_table)
            array, param = text_array(hashes)
            sql = f"SELECT email_hash FROM {table} WHERE workspace_id = %s AND email_hash = ANY({array})"  # noqa: S608
            return {h for (h,) in pg_execute(sql, [workspace_id, param], fetch=True)}
        found = self.filter(workspace_id=workspace_id, email_hash__in=hashes).values_list("email_hash", flat=True)
        return set(found)

    def for_email(self, workspace: Workspace | int, email: str) -> SuppressionQuerySet:
        workspace_id = workspace if isinstance(workspace, int) else workspace.pk
        return self.filter(workspace_id=workspace_id, email_hash=suppression_hash(workspace_id, email))


class Suppression(models.Model):
    """One suppressed address in one workspace. Lifted only by an explicit re-subscribe."""

    class Reason(models.TextChoices):
        UNSUBSCRIBE = "unsubscribe"
        BOUNCE = "bounce"
        COMPLAINT = "complaint"
        MANUAL = "manual"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="suppressions")
    email_hash = models.CharField(max_length=64, editable=False)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    # Where it came from: "one-click", "unsubscribe-page", "ses", "admin:<user>", "api:<key prefix>".
    source = models.CharField(max_length=100, blank=True)
    # Hash of the unsubscribe token that created it, so a second click after the contact was deleted
    # still shows "you are unsubscribed" instead of a 404.
    token_hash = models.CharField(max_length=64, blank=True, editable=False, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "email_hash"], name="suppression_unique")]

    def __str__(self) -> str:
        return f"{self.email_hash[:12]}… ({self.reason})"


def is_suppressed(workspace: Workspace | int, email: str) -> bool:
    """Whether the workspace must not mail this address (whatever the contact's status says)."""
    return Suppression.objects.for_email(workspace, email).exists()
