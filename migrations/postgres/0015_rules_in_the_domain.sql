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

-- An override is a debt: a pilot scaled without 3/3 evidence owes the missing items by this date.
ALTER TABLE pilots ADD COLUMN evidence_due DATE;

-- "Owner runs it" counts only when recorded by the owner in place, who has accepted: earlier rows that say
-- otherwise (an owner changed or declined after the record) no longer count.
UPDATE pilots SET evidence_owner_running = FALSE
WHERE evidence_owner_running AND (owner_status <> 'accepted' OR NOT EXISTS (
    SELECT 1 FROM evidence e WHERE e.pilot_id = pilots.id AND e.kind = 'owner_running' AND e.recorded_by = pilots.owner));

-- How many of the three evidence items count, as the domain counts them (`Pilot::evidence_count`), written with
-- each change of the pilot, so that the portfolio's counts repeat no rule. Existing rows are counted once, here,
-- by the rule as it stands (a P&L measurement counts when it moved from the baseline towards the target).
ALTER TABLE pilots ADD COLUMN evidence_count INTEGER NOT NULL DEFAULT 0;
UPDATE pilots SET evidence_count = (CASE WHEN evidence_workflow_live THEN 1 ELSE 0 END)
    + (CASE WHEN evidence_owner_running THEN 1 ELSE 0 END)
    + (CASE WHEN pnl_realised IS NOT NULL AND ((pnl_target > pnl_baseline AND pnl_realised > pnl_baseline)
        OR (pnl_target < pnl_baseline AND pnl_realised < pnl_baseline)) THEN 1 ELSE 0 END);
-- The funnel's covering index reads the count instead of the five columns it was made of. It also carries the id,
-- second: a narrow index that starts with the workspace alone is, in a new table without statistics, as cheap to
-- the planner as `pilots_workspace_id` for a lookup of one pilot by (workspace, id), which would then read every
-- pilot of the workspace; with the id in it, such a lookup is one entry whichever index it takes
-- (tests/store.rs, `a_pilot_is_looked_up_by_workspace_and_id_in_a_new_postgres_database`).
DROP INDEX pilots_funnel;
CREATE INDEX pilots_funnel ON pilots (workspace, id, stage, owner_status, kill_category, extensions, next_review_date,
    evidence_count);

-- A workspace's settings count their saves: a turn decided on settings that were saved again before it commits is
-- decided again (who may decide, who is an admin, whether a sponsor is required are checked as they are then).
ALTER TABLE workspace_settings ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
