-- Leases, for replicas sharing one database: work that one replica at a time must do (the workflow
-- engine) is held by its owner until `until` (microseconds), renewed as it works, and taken over by
-- another replica once it has run out.
CREATE TABLE leases (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);
