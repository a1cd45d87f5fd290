-- Stores, their API keys, and server-wide settings. Times are microseconds since the epoch, UTC.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE stores (
    id                              TEXT PRIMARY KEY,
    display_name                    TEXT NOT NULL,
    default_sms_subscription_status INTEGER NOT NULL,
    create_time                     INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    store_id     TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    display_name TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    create_time  INTEGER NOT NULL,
    PRIMARY KEY (store_id, id)
) STRICT;
