"""The built-in plugins, registered through the ``datafn`` entry-point group like any other."""
