-- Why the owner declined the last mile, as they said it, while they stand declined (export: owner_decline_reason).
-- Earlier declines keep their reason in the audit trail only.
ALTER TABLE pilots ADD COLUMN owner_decline_reason TEXT;
