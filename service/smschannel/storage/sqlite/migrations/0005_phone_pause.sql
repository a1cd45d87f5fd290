-- The store's pause and the provider's rejection are two facts (SPEC §3). `mobile_phone_status` keeps
-- what they read as together (REJECTED, else PAUSED, else ACTIVE), so filters stay one column;
-- `phone_paused` keeps the store's pause through a rejection and while the contact has no phone.
-- Rows from before knew one status: a PAUSED one was paused; a REJECTED one's earlier pause is lost.
ALTER TABLE contacts ADD COLUMN phone_paused INTEGER NOT NULL DEFAULT 0;
UPDATE contacts SET phone_paused = 1 WHERE mobile_phone_status = 3;
