"""Server stores on SQLite and PostgreSQL (plugin module of datafn-sqlmodel)."""
