"""PostgreSQL implementation of the storage seam, for several replicas on one database (issue 17).

So far the schema and its migrations (`db.py`, `migrations/`): the same tables, columns, keys and
indexes as the SQLite backend at its latest version, so both store the same values the same way. The
repositories behind the Protocols of `storage/` come next."""
