-- The rules of a turn are decided once, in Rust (src/domain/rules.rs), and the store writes the changes it is
-- given, a batch of turns table by table (src/store/write.rs). The functions that repeated the rules in PL/pgSQL
-- go. A pilot's version counts its writes: a change decided on an older version is not written but decided again
-- on the pilot as it is, so that who may do what is checked against the state the change is committed on.
DROP FUNCTION IF EXISTS lastmile_apply(JSONB);
DROP FUNCTION IF EXISTS lastmile_apply_together(JSONB);
DROP FUNCTION IF EXISTS lastmile_turn(JSONB);
DROP FUNCTION IF EXISTS lastmile_release_name(TEXT, TEXT, BIGINT, TIMESTAMPTZ, TEXT, TIMESTAMPTZ);

ALTER TABLE pilots ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- Evidence is bound to what it proves: the answer it proves, as the pilot had it when it was recorded, and when a
-- change of that answer voided it (a voided record stays in the history and no longer counts).
ALTER TABLE evidence ADD COLUMN proves TEXT;
ALTER TABLE evidence ADD COLUMN voided_at TIMESTAMPTZ;
