"""Boot the kernel: load the configuration, discover and validate plugins, configure them.

Both :class:`datafn.Client` and the server start from a :class:`Runtime`.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datafn.config import Config, SettingsRegistry, load_config
from datafn.errors import ConfigError
from datafn.plugin.manager import PluginManager

__all__ = ["Runtime"]

log = logging.getLogger("datafn.plugin")


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
        """Load configuration (see :mod:`datafn.config`) and the plugins it allows, then
        validate the plugins' settings sections and configure the plugins.

        :param plugins: plugin objects to register besides the entry-point plugins.
        :param overrides: keyword settings, highest precedence.
        """
        runtime = cls.discover(plugins=plugins, pyproject=pyproject, use_env=use_env, **overrides)
        runtime.configure()
        return runtime

    @classmethod
    def discover(
        cls,
        *,
        plugins: Sequence[object] = (),
        pyproject: Path | str | None = None,
        use_env: bool = True,
        **overrides: Any,
    ) -> Runtime:
        """The first half of :meth:`boot`: the built-in settings and the plugins, without the
        plugins' own settings (``datafn plugins`` lists plugins whose settings are invalid)."""
        config = load_config(pyproject=pyproject, use_env=use_env, **overrides)
        settings = config.settings
        manager = PluginManager(hook_timeout=settings.hook_timeout)
        manager.load(
            allow=settings.plugins,
            block=settings.disable_plugins,
            autoload=not settings.disable_plugin_autoload,
            extra=plugins,
        )
        _check_plugin_names(config, manager)
        manager.require(settings.required_plugins)
        return cls(config, manager)

    def configure(self) -> None:
        """The second half of :meth:`boot`: validate the plugins' settings sections
        (``datafn_add_settings``), then let plugins read them (``datafn_configure``)."""
        sections = SettingsRegistry()
        self.plugins.call_each("datafn_add_settings", sections, settings=sections)
        self.config.apply_sections(sections)
        self.plugins.call_each("datafn_configure", sections, config=self.config)

    @property
    def base_dir(self) -> Path:
        """Relative paths in configuration are relative to the pyproject.toml's folder."""
        return self.config.base_dir


def _check_plugin_names(config: Config, manager: PluginManager) -> None:
    """Names in ``plugins`` and ``disable-plugins`` that match no installed plugin.

    In ``plugins`` such a name is an error. In ``disable-plugins`` it is an error when it is
    close to the name of an installed plugin (a typo that would leave that plugin running),
    and a warning otherwise (a project may disable a plugin only some environments install).
    """
    available = manager.available
    for setting, names in (
        ("plugins", config.settings.plugins or ()),
        ("disable_plugins", config.settings.disable_plugins),
    ):
        for name in names:
            if name in available:
                continue
            key = config._user_key((setting,))
            provided = sorted(n for n, dist in available.items() if dist == name)
            near = provided or difflib.get_close_matches(name, list(available), n=1)
            if provided:
                hint = f"; {name!r} is a distribution, its plugins are named " + ", ".join(
                    repr(n) for n in provided
                )
            elif near:
                hint = f"; did you mean {near[0]!r}?"
            else:
                hint = f"; installed: {', '.join(sorted(available)) or 'none'}"
            message = f"no installed plugin is named {name!r}{hint}"
            if setting == "plugins" or near:
                raise ConfigError(message, key=key)
            log.warning("%s: %s", key, message)
