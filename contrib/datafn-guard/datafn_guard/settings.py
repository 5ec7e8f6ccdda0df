"""``[tool.datafn.guard]``: the typed settings of the guard plugin.

::

    [tool.datafn.guard]
    max-batch-size = 200            # mutations per push / clone_up request, records per seed
    max-payload-bytes = 1_000_000   # size of the JSON payload
    require-credentials = true      # client: a token is configured; server: caller authenticated
    validate-schema = true          # default: on whenever [tool.datafn] has a schema
    rules = ["myapp.policies:no_deletes_on_fridays"]

    [tool.datafn.guard.client]      # what this side may do; unset: everything
    phases = ["pull", "push"]
    resources = ["todos"]

    [tool.datafn.guard.server]
    phases = ["clone", "pull", "push", "reconcile"]
"""

from __future__ import annotations

from pydantic import Field

from datafn.config import Section

__all__ = ["PHASES", "GuardSettings", "SideRules"]

#: Every sync phase a ``datafn_before_sync`` implementation can see (on the server, the phase
#: is the route's action, so ``clone_up`` arrives as ``push``).
PHASES = ("seed", "clone", "pull", "push", "clone_up", "reconcile")


class SideRules(Section):
    """``[tool.datafn.guard.client]`` / ``[tool.datafn.guard.server]``."""

    phases: list[str] | None = Field(None, description="phases allowed on this side; unset: all")
    resources: list[str] | None = Field(
        None, description="resources allowed on this side; unset: all"
    )


class GuardSettings(Section):
    """``[tool.datafn.guard]``: fail-closed policies run before every sync operation."""

    enabled: bool = Field(True, description="false turns every check off")
    client: SideRules = SideRules()
    server: SideRules = SideRules()
    max_batch_size: int | None = Field(
        None, ge=1, description="mutations per push/clone_up request, records per seed request"
    )
    max_payload_bytes: int | None = Field(
        None, ge=1, description="largest payload, in bytes of compact JSON"
    )
    require_credentials: bool = Field(
        False,
        description="client: [tool.datafn.http] has a token or Authorization header; "
        "server: the request is authenticated",
    )
    validate_schema: bool = Field(
        True, description="check resources, fields and values against the project's schema"
    )
    rules: list[str] = Field(
        default_factory=list,
        description="your own checks, by import path: 'package.module:function'",
    )
