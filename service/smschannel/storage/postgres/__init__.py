"""PostgreSQL for the storage seam, for several replicas on one database (issue 17).

The repositories are the SQL ones of storage/sqlite/, whose SQL both engines read; `engine.py` runs
them on PostgreSQL (psycopg 3, serializable transactions retried on conflict), and `db.py` keeps the
schema: `migrations/`, the same tables, columns, keys and indexes as the SQLite backend at its latest
version, so both store the same values the same way. Select it with SMSCHANNEL_DB=postgresql://..."""
