-- Contacts, their activities, and the per-store SMS channel configuration.
-- `seq` (the rowid) only grows, so keyset pagination on it is stable while rows are inserted.
CREATE TABLE contacts (
    seq                     INTEGER PRIMARY KEY,
    store_id                TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id                      TEXT NOT NULL,
    email                   TEXT NOT NULL,
    first_name              TEXT NOT NULL,
    last_name               TEXT NOT NULL,
    mobile_phone            TEXT NOT NULL,
    mobile_phone_status     INTEGER NOT NULL,
    sms_subscription_status INTEGER NOT NULL,
    custom_fields           TEXT NOT NULL,
    create_time             INTEGER NOT NULL,
    update_time             INTEGER NOT NULL,
    version                 INTEGER NOT NULL,
    UNIQUE (store_id, id)
) STRICT;
CREATE INDEX contacts_by_store ON contacts (store_id, seq);
CREATE UNIQUE INDEX contacts_by_email ON contacts (store_id, email) WHERE email != '';
CREATE INDEX contacts_by_phone ON contacts (store_id, mobile_phone) WHERE mobile_phone != '';

CREATE TABLE activities (
    seq         INTEGER PRIMARY KEY,
    store_id    TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    id          TEXT NOT NULL,
    type        INTEGER NOT NULL,
    source      INTEGER NOT NULL,
    details     TEXT NOT NULL,
    create_time INTEGER NOT NULL
) STRICT;
CREATE INDEX activities_by_contact ON activities (store_id, contact_id, seq);

CREATE TABLE channel_configs (
    store_id             TEXT PRIMARY KEY REFERENCES stores (id) ON DELETE CASCADE,
    provider             INTEGER NOT NULL,
    token                BLOB,
    token_hint           TEXT NOT NULL,
    default_country      TEXT NOT NULL,
    default_sender       TEXT NOT NULL,
    callback_secret      TEXT NOT NULL,
    token_status         INTEGER NOT NULL,
    token_status_message TEXT NOT NULL,
    account_balance      REAL NOT NULL,
    update_time          INTEGER NOT NULL,
    version              INTEGER NOT NULL
) STRICT;
