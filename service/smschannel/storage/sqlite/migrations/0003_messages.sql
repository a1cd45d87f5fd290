-- SMS contents, and messages: the log and the outbox in one table (a QUEUED row is outbox work).
CREATE TABLE sms_contents (
    seq          INTEGER PRIMARY KEY,
    store_id     TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    display_name TEXT NOT NULL,
    text         TEXT NOT NULL,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    UNIQUE (store_id, id)
) STRICT;

CREATE TABLE messages (
    seq               INTEGER PRIMARY KEY,
    store_id          TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id                TEXT NOT NULL UNIQUE,
    request_id        TEXT NOT NULL,
    contact_id        TEXT NOT NULL,
    workflow_id       TEXT NOT NULL,
    workflow_node     TEXT NOT NULL,
    workflow_run      TEXT NOT NULL,
    sms_content_id    TEXT NOT NULL,
    type              INTEGER NOT NULL,
    recipient_mode    INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    status_reason     TEXT NOT NULL,
    recipient         TEXT NOT NULL,
    sender            TEXT NOT NULL,
    text              TEXT NOT NULL,
    encoding          INTEGER NOT NULL,
    segments          INTEGER NOT NULL,
    provider_id       TEXT NOT NULL,
    create_time       INTEGER NOT NULL,
    update_time       INTEGER NOT NULL,
    send_time         INTEGER,
    delivery_time     INTEGER,
    attempts          INTEGER NOT NULL,
    next_attempt_time INTEGER
) STRICT;
CREATE UNIQUE INDEX messages_by_request ON messages (store_id, request_id) WHERE request_id != '';
CREATE INDEX messages_by_store ON messages (store_id, seq);
CREATE INDEX messages_by_contact ON messages (store_id, contact_id, status, create_time) WHERE contact_id != '';
CREATE INDEX messages_outbox ON messages (next_attempt_time) WHERE status = 1;
CREATE INDEX messages_by_provider_id ON messages (store_id, provider_id) WHERE provider_id != '';

-- Provider callbacks already applied: (provider id, status) makes a duplicate a no-op.
CREATE TABLE provider_events (
    store_id    TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (store_id, provider_id, status)
) STRICT;
