-- Outbox claims, for replicas sharing one database: a QUEUED message is held by the replica that
-- created or read it (claim_owner) until claim_until (microseconds); another replica takes it only
-- after that, so two replicas never hand one message to Instasent at once, and a dead replica's
-- messages are taken over when its claims expire.
ALTER TABLE messages ADD COLUMN claim_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN claim_until BIGINT NOT NULL DEFAULT 0;
