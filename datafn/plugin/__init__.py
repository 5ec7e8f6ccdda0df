"""Writing a datafn plugin.

A plugin is any module or object with functions named after the hook specifications in
:mod:`datafn.plugin.spec`, each marked with :data:`hookimpl`::

    from datafn.plugin import hookimpl

    @hookimpl
    async def datafn_before_sync(phase, payload, context):
        if phase == "push" and len(payload["mutations"]) > 1000:
            raise Veto("batch too large", code="LIMIT_EXCEEDED", path="mutations")

Publish it through the ``datafn`` entry-point group of your distribution::

    [project.entry-points.datafn]
    my-plugin = "my_package.plugin"

and datafn finds it when it starts. ``datafn plugins`` lists what it found. Implementations may
be plain functions or coroutines; datafn awaits the latter. A hook implementation may accept any
subset of the arguments its specification names.

Markers: :data:`hookimpl` (for plugins) and :data:`hookspec` (for the kernel's specifications).
"""

from __future__ import annotations

import pluggy

#: The name of the pluggy project and of the entry-point group.
PROJECT_NAME = "datafn"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]
