-- Issue 18: a store's sending rules (time zone, quiet hours, frequency cap, part prices) as one JSON
-- document ('{}': the defaults), and the time quiet hours hold a QUEUED message until (microseconds).
ALTER TABLE channel_configs ADD COLUMN rules TEXT NOT NULL DEFAULT '{}';
ALTER TABLE messages ADD COLUMN hold_until BIGINT;
