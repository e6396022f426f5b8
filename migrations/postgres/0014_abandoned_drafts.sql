-- A registration left untouched for a week no longer holds its pilot's name (the domain's
-- `DRAFT_ABANDONED_AFTER`; the writer sends the cut-off time with each turn that claims a name). Registering the
-- name again, or renaming a pilot to it, removes the abandoned draft first, with the unfinished conversation that
-- was registering it (the foreign key cascades), and audits who released it. SQLite does the same in
-- `release_abandoned_name` (src/store/commit.rs).
CREATE FUNCTION lastmile_release_name(r_ws TEXT, r_key TEXT, r_except BIGINT, r_before TIMESTAMPTZ, r_actor TEXT,
    r_now TIMESTAMPTZ) RETURNS VOID LANGUAGE plpgsql AS $fn$
DECLARE
    gone_id   BIGINT;
    gone_name TEXT;
BEGIN
    DELETE FROM pilots p
    WHERE p.workspace = r_ws AND p.name_key = r_key AND p.stage = 'draft' AND p.id IS DISTINCT FROM r_except
        AND p.updated_at <= r_before
        AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.pilot_id = p.id AND c.updated_at > r_before)
    RETURNING p.id, p.name INTO gone_id, gone_name;
    IF gone_id IS NOT NULL THEN
        INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
        VALUES (r_ws, gone_id, r_actor, 'abandoned', 'name', gone_name, NULL, r_now);
    END IF;
END
$fn$;

-- A turn's writes stay in 0012's function, renamed; `lastmile_turn` (which both batch functions call) now frees
-- the name a turn claims, when it has to, before them.
ALTER FUNCTION lastmile_turn(JSONB) RENAME TO lastmile_turn_writes;

CREATE FUNCTION lastmile_turn(t JSONB) RETURNS JSONB LANGUAGE plpgsql AS $fn$
BEGIN
    IF t ? 'release' THEN
        PERFORM lastmile_release_name(t->>'ws', t->'release'->>'key', (t->>'pilot')::BIGINT,
            (t->'release'->>'before')::TIMESTAMPTZ, t->>'actor', (t->>'now')::TIMESTAMPTZ);
    END IF;
    RETURN lastmile_turn_writes(t);
END
$fn$;
