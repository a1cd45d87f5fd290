-- Workflows, their runs (durable positions and timers) and each run's steps.
CREATE TABLE workflows (
    seq             INTEGER PRIMARY KEY,
    store_id        TEXT NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    display_name    TEXT NOT NULL,
    state           INTEGER NOT NULL,
    trigger_kind    TEXT NOT NULL,
    event_name      TEXT NOT NULL,
    graph           TEXT NOT NULL,
    broadcast_after INTEGER NOT NULL DEFAULT 0,
    broadcast_done  INTEGER NOT NULL DEFAULT 0,
    create_time     INTEGER NOT NULL,
    update_time     INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    UNIQUE (store_id, id)
) STRICT;
CREATE INDEX workflows_by_trigger ON workflows (store_id, state, trigger_kind, event_name);

CREATE TABLE workflow_runs (
    seq          INTEGER PRIMARY KEY,
    store_id     TEXT NOT NULL,
    workflow_id  TEXT NOT NULL,
    id           TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    state        INTEGER NOT NULL,
    current_node TEXT NOT NULL,
    wake_time    INTEGER NOT NULL,
    event        TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    step_count   INTEGER NOT NULL,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL,
    UNIQUE (store_id, workflow_id, id)
) STRICT;
CREATE UNIQUE INDEX runs_by_request ON workflow_runs (store_id, workflow_id, request_id) WHERE request_id != '';
CREATE INDEX runs_due ON workflow_runs (wake_time) WHERE state IN (1, 2);
CREATE INDEX runs_by_workflow ON workflow_runs (store_id, workflow_id, seq);

CREATE TABLE workflow_run_steps (
    seq         INTEGER PRIMARY KEY,
    store_id    TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    node        TEXT NOT NULL,
    time        INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    message_id  TEXT NOT NULL
) STRICT;
CREATE INDEX steps_by_run ON workflow_run_steps (store_id, workflow_id, run_id, seq);
