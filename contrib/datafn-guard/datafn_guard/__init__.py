"""datafn-guard: fail-closed policies checked before every sync operation.

Install it and configure ``[tool.datafn.guard]`` (see :mod:`datafn_guard.settings`): allowed
phases and resources per side, batch and payload size limits, required credentials, schema
validation of the payload, and your own rules by import path. A refusal is a
:class:`GuardVeto` naming the rule that fired; the sync operation is aborted with
:class:`datafn.SyncVetoed` (plugin ``guard``), and on the server the client gets a
``FORBIDDEN`` or ``DFQL_INVALID`` envelope with the path.
"""

from __future__ import annotations

from datafn_guard.checks import GuardVeto, Rule
from datafn_guard.settings import PHASES, GuardSettings, SideRules

__all__ = ["PHASES", "GuardSettings", "GuardVeto", "Rule", "SideRules"]
