-- Writes a batch of turns faster than 0009 did, with the same writes (see 0009 for what a turn writes and what
-- the function answers). Measured in BENCHMARKS.md (figure 1 on PostgreSQL).
--
-- * A turn's writes live in `lastmile_turn`, which raises on any failure. Two functions run a batch through it:
--   `lastmile_apply_together` runs every turn in the call's one transaction, with no subtransaction, and fails as
--   a whole when one turn fails; `lastmile_apply` (as before) runs each turn in its own subtransaction and answers
--   one outcome per turn. The writer calls the first, and the second only when the first failed: conflicts and
--   taken names are rare, and a subtransaction per turn cost every batch.
-- * A change's old value, its audit row and the change itself are one statement instead of three.
-- * The effects are walked by position instead of by a query per turn.
-- * The statements run on generic plans (`plan_cache_mode`). Their parameters come from JSON, so PostgreSQL kept
--   planning each statement again at every call (a fifth of the function's time in a profile). The outcomes are
--   gathered in an array, not by appending to a JSON value (which copied it whole at each turn).
-- * Every turn answers the pilot's row as it leaves it (before, only a turn whose last write set a field or the
--   stage did, and the writer read the row again for the others).
CREATE FUNCTION lastmile_turn(t JSONB) RETURNS JSONB LANGUAGE plpgsql AS $fn$
DECLARE
    e        JSONB;
    g        JSONB;
    s        JSONB;
    w        TEXT;
    a        TEXT;
    moment   TIMESTAMPTZ;
    pid      BIGINT;
    after    JSONB;
    old_text TEXT;
    new_text TEXT;
BEGIN
    w := t->>'ws';
    a := t->>'actor';
    moment := (t->>'now')::TIMESTAMPTZ;
    pid := (t->>'pilot')::BIGINT;
    g := t->'guard';
    IF g->>'kind' = 'none' THEN
        PERFORM 1 FROM conversations WHERE workspace = w AND user_id = a;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'LMCON';
        END IF;
    ELSIF g->>'kind' = 'at' THEN
        s := g->'save';
        -- Writing first takes the row's lock: a concurrent turn of the same user waits, then finds it moved.
        IF jsonb_typeof(s) = 'object' THEN
            UPDATE conversations SET flow = s->>'flow', at = s->>'at', pilot_id = (s->>'pilot')::BIGINT,
                channel = s->>'channel', return_to_confirm = (s->>'rtc')::BOOLEAN, updated_at = moment,
                scratch = s->>'scratch'
            WHERE workspace = w AND user_id = a AND flow = g->>'flow' AND at = g->>'at'
                AND return_to_confirm = (g->>'rtc')::BOOLEAN
                AND pilot_id IS NOT DISTINCT FROM (g->>'pilot')::BIGINT;
        ELSE
            UPDATE conversations SET updated_at = moment
            WHERE workspace = w AND user_id = a AND flow = g->>'flow' AND at = g->>'at'
                AND return_to_confirm = (g->>'rtc')::BOOLEAN
                AND pilot_id IS NOT DISTINCT FROM (g->>'pilot')::BIGINT;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'LMCON';
        END IF;
    END IF;

    FOR i IN 0 .. jsonb_array_length(t->'effects') - 1 LOOP
        e := t->'effects'->i;
        IF pid IS NULL AND e->>'kind' NOT IN ('create_draft', 'save_conversation', 'end_conversation', 'close_ask') THEN
            RAISE EXCEPTION USING ERRCODE = 'LMGON';
        END IF;
        CASE e->>'kind'
        WHEN 'create_draft' THEN
            after := NULL;
            -- Checked first so a taken name consumes no id; the unique index still settles races.
            PERFORM 1 FROM pilots WHERE workspace = w AND name_key = e->>'key';
            IF FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'LMNAM';
            END IF;
            INSERT INTO pilots (workspace, name, name_key, stage, registered_by, registered_at, home_channel, updated_at)
            VALUES (w, e->>'name', e->>'key', 'draft', a, moment, t->>'channel', moment)
            RETURNING id INTO pid;
            INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
            VALUES (w, pid, a, 'created', 'name', NULL, e->>'name', moment);

        WHEN 'set' THEN
            IF e->>'field' = 'name' THEN
                PERFORM 1 FROM pilots WHERE workspace = w AND name_key = e->>'key' AND id <> pid;
                IF FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'LMNAM';
                END IF;
            END IF;
            -- A P&L line's old and new values are written alike, by this function, so they compare.
            new_text := CASE WHEN e->>'field' = 'pnl'
                THEN jsonb_build_object('line', e->>'line', 'unit', e->>'unit',
                    'baseline', (e->>'baseline')::DOUBLE PRECISION, 'target', (e->>'target')::DOUBLE PRECISION)::TEXT
                ELSE e->>'audit' END;
            -- The old value, the audit row and the change in one statement (its parts see the row as it was).
            CASE e->>'field'
            WHEN 'name' THEN
                WITH old AS (SELECT name AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'name', old.v, new_text, moment FROM old)
                UPDATE pilots SET name = e->>'value', name_key = e->>'key', updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            WHEN 'workflow' THEN
                WITH old AS (SELECT workflow AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'workflow', old.v, new_text, moment FROM old)
                UPDATE pilots SET workflow = e->>'value', updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            WHEN 'owner' THEN
                WITH old AS (SELECT owner AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'owner', old.v, new_text, moment FROM old)
                UPDATE pilots SET owner = e->>'value', updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            WHEN 'sponsor' THEN
                WITH old AS (SELECT sponsor AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'sponsor', old.v, new_text, moment FROM old)
                UPDATE pilots SET sponsor = e->>'value', updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            WHEN 'pnl' THEN
                WITH old AS (SELECT CASE WHEN pnl_line IS NOT NULL AND pnl_unit IS NOT NULL
                            AND pnl_baseline IS NOT NULL AND pnl_target IS NOT NULL
                        THEN jsonb_build_object('line', pnl_line, 'unit', pnl_unit, 'baseline', pnl_baseline,
                            'target', pnl_target)::TEXT END AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'pnl', old.v, new_text, moment FROM old)
                UPDATE pilots SET pnl_line = e->>'line', pnl_unit = e->>'unit',
                    pnl_baseline = (e->>'baseline')::DOUBLE PRECISION,
                    pnl_target = (e->>'target')::DOUBLE PRECISION, updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            WHEN 'review_date' THEN
                -- Before any extension, the review date in force is the first one.
                WITH old AS (SELECT CAST(review_date AS TEXT) AS v FROM pilots WHERE workspace = w AND id = pid),
                     logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                        SELECT w, pid, a, 'set', 'review_date', old.v, new_text, moment FROM old)
                UPDATE pilots SET review_date = (e->>'value')::DATE,
                    next_review_date = CASE WHEN extensions = 0 THEN (e->>'value')::DATE ELSE next_review_date END,
                    updated_at = moment
                WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            END CASE;
            IF after IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'LMGON';
            END IF;

        WHEN 'set_stage' THEN
            WITH old AS (SELECT stage AS v FROM pilots WHERE workspace = w AND id = pid),
                 logged AS (INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                    SELECT w, pid, a, 'stage', 'stage', old.v, e->>'stage', moment FROM old)
            UPDATE pilots SET stage = e->>'stage', updated_at = moment
            WHERE workspace = w AND id = pid RETURNING to_jsonb(pilots) INTO after;
            IF after IS NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'LMGON';
            END IF;

        WHEN 'delete_draft' THEN
            after := NULL;
            DELETE FROM pilots WHERE workspace = w AND id = pid AND stage = 'draft' RETURNING name INTO old_text;
            INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
            VALUES (w, pid, a, 'deleted', NULL, old_text, NULL, moment);
            pid := NULL;

        WHEN 'save_conversation' THEN
            IF (e->>'insert_only')::BOOLEAN THEN
                -- A conversation that must be new: a concurrent start of the same user loses here.
                INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch)
                VALUES (w, a, e->>'flow', e->>'at', COALESCE((e->>'pilot')::BIGINT, pid), e->>'channel',
                    (e->>'rtc')::BOOLEAN, moment, e->>'scratch');
            ELSE
                INSERT INTO conversations (workspace, user_id, flow, at, pilot_id, channel, return_to_confirm, updated_at, scratch)
                VALUES (w, a, e->>'flow', e->>'at', COALESCE((e->>'pilot')::BIGINT, pid), e->>'channel',
                    (e->>'rtc')::BOOLEAN, moment, e->>'scratch')
                ON CONFLICT (workspace, user_id) DO UPDATE SET flow = EXCLUDED.flow, at = EXCLUDED.at,
                    pilot_id = EXCLUDED.pilot_id, channel = EXCLUDED.channel,
                    return_to_confirm = EXCLUDED.return_to_confirm, updated_at = EXCLUDED.updated_at,
                    scratch = EXCLUDED.scratch;
            END IF;

        WHEN 'end_conversation' THEN
            DELETE FROM conversations WHERE workspace = w AND user_id = a;

        WHEN 'add_evidence' THEN
            after := NULL;
            INSERT INTO evidence (workspace, pilot_id, kind, note, value, period, source, recorded_by, recorded_at)
            VALUES (w, pid, e->>'evidence', e->>'note', (e->>'value')::DOUBLE PRECISION, e->>'period',
                e->>'source', a, moment);
            CASE e->>'marks'
            WHEN 'workflow_live' THEN
                UPDATE pilots SET evidence_workflow_live = TRUE, updated_at = moment WHERE workspace = w AND id = pid;
            WHEN 'owner_running' THEN
                UPDATE pilots SET evidence_owner_running = TRUE, updated_at = moment WHERE workspace = w AND id = pid;
            WHEN 'pnl_realised' THEN
                UPDATE pilots SET pnl_realised = (e->>'value')::DOUBLE PRECISION, updated_at = moment
                WHERE workspace = w AND id = pid;
            END CASE;
            INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
            VALUES (w, pid, a, 'evidence', e->>'evidence', NULL, e->>'note', moment);

        WHEN 'decide' THEN
            after := NULL;
            SELECT stage INTO old_text FROM pilots WHERE workspace = w AND id = pid;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'LMGON';
            END IF;
            CASE e->>'decision'
            WHEN 'scale' THEN
                UPDATE pilots SET stage = 'in_production', decision = 'scale', decision_reason = e->>'reason',
                    scale_override = (e->>'override')::BOOLEAN, updated_at = moment
                WHERE workspace = w AND id = pid;
            WHEN 'extend' THEN
                UPDATE pilots SET decision = 'extend', decision_reason = e->>'reason',
                    next_review_date = (e->>'new_date')::DATE, extensions = extensions + 1, updated_at = moment
                WHERE workspace = w AND id = pid;
            WHEN 'kill' THEN
                UPDATE pilots SET stage = 'killed', decision = 'kill', decision_reason = e->>'reason',
                    kill_category = e->>'category', updated_at = moment
                WHERE workspace = w AND id = pid;
            END CASE;
            INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
            VALUES (w, pid, a, 'decision', 'stage', old_text, e->>'audit', moment);

        WHEN 'set_owner_status' THEN
            after := NULL;
            SELECT owner_status INTO old_text FROM pilots WHERE workspace = w AND id = pid;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'LMGON';
            END IF;
            IF old_text <> e->>'status' OR (e->>'has_reason')::BOOLEAN THEN
                UPDATE pilots SET owner_status = e->>'status', updated_at = moment WHERE workspace = w AND id = pid;
                INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
                VALUES (w, pid, a, 'owner_status', 'owner_status', old_text, e->>'audit', moment);
            END IF;

        WHEN 'open_ask' THEN
            -- A new ask of the same kind about the same pilot supersedes the old one.
            UPDATE asks SET answered_at = moment
            WHERE workspace = w AND pilot_id = pid AND kind = e->>'ask' AND answered_at IS NULL;
            INSERT INTO asks (workspace, user_id, kind, pilot_id, payload, created_at)
            VALUES (w, e->>'user', e->>'ask', pid, e->>'payload', moment);

        WHEN 'nudge_answered' THEN
            after := NULL;
            UPDATE pilots SET unanswered = 0 WHERE workspace = w AND id = pid;

        WHEN 'snooze' THEN
            after := NULL;
            UPDATE pilots SET snoozes = snoozes + 1, snoozed_until = (e->>'until')::TIMESTAMPTZ
            WHERE workspace = w AND id = pid;
            INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
            VALUES (w, pid, a, 'snooze', 'snoozed_until', NULL, e->>'audit', moment);

        WHEN 'close_ask' THEN
            -- Answered once: a second answer racing the first finds it closed and is decided again.
            UPDATE asks SET answered_at = moment
            WHERE workspace = w AND id = (e->>'ask')::BIGINT AND answered_at IS NULL;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'LMCON';
            END IF;
        END CASE;
    END LOOP;
    IF pid IS NOT NULL AND after IS NULL THEN
        SELECT to_jsonb(p) INTO after FROM pilots p WHERE workspace = w AND id = pid;
    END IF;
    RETURN jsonb_build_object('pilot', pid, 'row', CASE WHEN pid IS NOT NULL THEN after END);
END
$fn$;

-- Every turn in the caller's transaction: the first failure fails the call, and nothing of it is kept.
CREATE FUNCTION lastmile_apply_together(turns JSONB) RETURNS JSONB LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    outcomes JSONB[] := '{}';
BEGIN
    FOR i IN 0 .. jsonb_array_length(turns) - 1 LOOP
        outcomes := array_append(outcomes, lastmile_turn(turns->i));
    END LOOP;
    RETURN to_jsonb(outcomes);
END
$fn$;

-- Each turn in its own subtransaction: a turn that fails leaves nothing behind and does not stop the others.
CREATE OR REPLACE FUNCTION lastmile_apply(turns JSONB) RETURNS JSONB LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    cname    TEXT;
    outcomes JSONB[] := '{}';
BEGIN
    FOR i IN 0 .. jsonb_array_length(turns) - 1 LOOP
        BEGIN
            outcomes := array_append(outcomes, lastmile_turn(turns->i));
        EXCEPTION
            WHEN SQLSTATE 'LMCON' THEN
                outcomes := array_append(outcomes, jsonb_build_object('error', 'conflict'));
            WHEN SQLSTATE 'LMNAM' THEN
                outcomes := array_append(outcomes, jsonb_build_object('error', 'name_taken'));
            WHEN SQLSTATE 'LMGON' THEN
                outcomes := array_append(outcomes, jsonb_build_object('error', 'pilot_gone'));
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
                outcomes := array_append(outcomes, jsonb_build_object('error',
                    CASE cname WHEN 'pilots_workspace_name_key' THEN 'name_taken'
                        WHEN 'conversations_pkey' THEN 'conflict' ELSE 'database' END,
                    'message', SQLSTATE || ': ' || SQLERRM));
            WHEN OTHERS THEN
                outcomes := array_append(outcomes, jsonb_build_object('error', 'database',
                    'message', SQLSTATE || ': ' || SQLERRM));
        END;
    END LOOP;
    RETURN to_jsonb(outcomes);
END
$fn$;
