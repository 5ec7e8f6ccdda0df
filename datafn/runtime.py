"""Boot the kernel: load the configuration, discover and validate plugins, configure them.

Both :class:`datafn.Client` and the server start from a :class:`Runtime`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafn.config import Config, SettingsRegistry, load_config
from datafn.plugin.manager import PluginManager

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """The effective configuration and the plugin manager built from it."""

    config: Config
    plugins: PluginManager

    @classmethod
    def boot(
        cls,
        *,
        plugins: Sequence[object] = (),
        pyproject: Path | str | None = None,
        use_env: bool = True,
        **overrides: Any,
    ) -> Runtime:
        """Load configuration (see :mod:`datafn.config`) and the plugins it allows.

        :param plugins: plugin objects to register besides the entry-point plugins.
        :param overrides: keyword settings, highest precedence.
        """
        config = load_config(pyproject=pyproject, use_env=use_env, **overrides)
        settings = config.settings
        manager = PluginManager(hook_timeout=settings.hook_timeout)
        manager.load(
            allow=settings.plugins,
            block=settings.disable_plugins,
            autoload=not settings.disable_plugin_autoload,
            required=settings.required_plugins,
            extra=plugins,
        )
        sections = SettingsRegistry()
        manager.call_each("datafn_add_settings", sections, settings=sections)
        config.apply_sections(sections)
        manager.call_each("datafn_configure", sections, config=config)
        return cls(config, manager)

    @property
    def base_dir(self) -> Path:
        """Relative paths in configuration are relative to the pyproject.toml's folder."""
        return self.config.pyproject.parent if self.config.pyproject else Path.cwd()
