"""datafn-redact: dropped and masked fields never leave the device; the local copy keeps them."""

from __future__ import annotations

from typing import Any

import pytest

from datafn import ConfigError

SCHEMA: dict[str, Any] = {
    "resources": [
        {
            "name": "contacts",
            "fields": [
                {"name": "name", "type": "string", "required": True},
                {"name": "phone", "type": "string"},
                {"name": "draft", "type": "string"},
            ],
        }
    ]
}


async def test_fields_are_dropped_and_masked_before_push(
    datafn_project: Any, datafn_server: Any, datafn_client: Any
) -> None:
    datafn_project.write(
        '[tool.datafn.redact]\ndrop = ["*.draft"]\nmask = ["contacts.phone"]\nmask-with = "x"\n',
        schema=SCHEMA,
    )
    datafn_server()
    async with datafn_client() as client:
        contacts = client.table("contacts")
        local = await contacts.insert({"name": "Ada", "phone": "555", "draft": "secret"})
        await client.sync.push()
        assert await contacts.get(local["id"]) == local, "the local copy keeps every field"
    async with datafn_client(store="memory://") as other:
        await other.sync.clone()
        remote = await other.table("contacts").get(local["id"])
    assert remote is not None
    assert remote["phone"] == "x" and "draft" not in remote and remote["name"] == "Ada"


def test_field_names_are_checked(datafn_project: Any) -> None:
    datafn_project.write('[tool.datafn.redact]\ndrop = ["draft"]\n')
    with pytest.raises(ConfigError) as info:
        datafn_project.boot()
    assert info.value.key == "tool.datafn.redact.drop"
