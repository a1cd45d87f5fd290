-- Why the engine last could not move a workflow (e.g. a broadcast page that keeps failing), shown on
-- the workflow; written by the engine, not by edits, so `version` (the etag) does not change with it.
-- `last_error_time` is 0 when there is no error.
ALTER TABLE workflows ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE workflows ADD COLUMN last_error_time INTEGER NOT NULL DEFAULT 0;
