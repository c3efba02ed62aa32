from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from crm.models import ApiKey, Workspace, hash_secret

pytestmark = pytest.mark.django_db


def test_it_stores_only_a_hash_of_the_secret(workspace: Workspace) -> None:
    key, secret = ApiKey.issue(workspace=workspace, name="signup hook")

    stored = ApiKey.objects.get(pk=key.pk)
    assert secret not in {stored.secret_hash, stored.prefix, stored.name}
    assert stored.secret_hash == hash_secret(secret)
    assert secret.startswith(stored.prefix + "_")


def test_it_authenticates_active_keys_and_refuses_revoked_ones(workspace: Workspace) -> None:
    key, secret = ApiKey.issue(workspace=workspace)
    assert ApiKey.objects.authenticate(secret) == key

    key.revoke()

    assert ApiKey.objects.authenticate(secret) is None
    assert ApiKey.objects.authenticate("trk_nope_nope") is None


def test_create_api_key_command_prints_a_working_secret_once(workspace: Workspace) -> None:
    out = StringIO()
    call_command("create_api_key", workspace="acme", name="ops", stdout=out)

    secret = out.getvalue().strip()
    key = ApiKey.objects.authenticate(secret)
    assert key is not None and key.name == "ops" and key.workspace == workspace


def test_create_api_key_command_rejects_an_unknown_workspace(db: None) -> None:
    with pytest.raises(CommandError, match="No workspace"):
        call_command("create_api_key", workspace="missing")


def test_create_workspace_command_validates_the_time_zone(db: None) -> None:
    out = StringIO()
    call_command("create_workspace", "studio", name="Studio", time_zone="Europe/Malta", stdout=out)
    assert Workspace.objects.get(slug="studio").time_zone == "Europe/Malta"

    with pytest.raises(CommandError, match="IANA"):
        call_command("create_workspace", "other", name="Other", time_zone="Mars/Olympus")
