"""SQLite (default) and PostgreSQL stores for datafn, built on SQLModel/SQLAlchemy."""
