"""The client store on SQLite (plugin module of datafn-sqlmodel)."""
