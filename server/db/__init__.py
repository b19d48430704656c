"""Database layer: schema, engine and pool, embedded PostgreSQL, migrations."""
