-- A registration left untouched for a week no longer holds its pilot's name (the domain's
-- `DRAFT_ABANDONED_AFTER`): the writer sends, with each turn that claims a name, the time up to which a draft's
-- last answer makes it abandoned. When the name a turn claims is taken by such a draft, the draft goes first, with
-- the unfinished conversation that was registering it (the foreign key cascades), and the turn's actor is audited
-- as having released it. SQLite does the same in `release_abandoned_name` (src/store/commit.rs).
--
-- `lastmile_turn` is 0012's, but for its two name checks: either, finding the name taken, tries to free it; and it
-- answers what it freed.

-- What was freed, if the name `r_key` was: held by a draft (other than `r_except`) whose last answer, to the pilot
-- or to the conversation registering it, is no later than `r_before`. NULL when it was not; else who had started
-- the draft and its name, so that they can be told.
CREATE FUNCTION lastmile_release_name(r_ws TEXT, r_key TEXT, r_except BIGINT, r_before TIMESTAMPTZ, r_actor TEXT,
    r_now TIMESTAMPTZ) RETURNS JSONB LANGUAGE plpgsql AS $fn$
DECLARE
    gone_id   BIGINT;
    gone_name TEXT;
    gone_by   TEXT;
BEGIN
    IF r_before IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM pilots p
    WHERE p.workspace = r_ws AND p.name_key = r_key AND p.stage = 'draft' AND p.id IS DISTINCT FROM r_except
        AND p.updated_at <= r_before
        AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.pilot_id = p.id AND c.updated_at > r_before)
    RETURNING p.id, p.name, p.registered_by INTO gone_id, gone_name, gone_by;
    IF gone_id IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit (workspace, pilot_id, actor, action, field, old_value, new_value, at)
    VALUES (r_ws, gone_id, r_actor, 'abandoned', 'name', gone_name, NULL, r_now);
    RETURN jsonb_build_object('registrant', gone_by, 'name', gone_name);
END
$fn$;

CREATE OR REPLACE FUNCTION lastmile_turn(t JSONB) RETURNS JSONB LANGUAGE plpgsql AS $fn$
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
    abandoned_before TIMESTAMPTZ;
    released JSONB;
BEGIN
    w := t->>'ws';
    a := t->>'actor';
    moment := (t->>'now')::TIMESTAMPTZ;
    pid := (t->>'pilot')::BIGINT;
    g := t->'guard';
    abandoned_before := (t->>'abandoned_before')::TIMESTAMPTZ;
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
            -- Checked first so a taken name consumes no id; the unique index still settles races. A name an
            -- abandoned draft holds is freed.
            PERFORM 1 FROM pilots WHERE workspace = w AND name_key = e->>'key';
            IF FOUND THEN
                released := lastmile_release_name(w, e->>'key', NULL, abandoned_before, a, moment);
                IF released IS NULL THEN
                    RAISE EXCEPTION USING ERRCODE = 'LMNAM';
                END IF;
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
                    released := lastmile_release_name(w, e->>'key', pid, abandoned_before, a, moment);
                    IF released IS NULL THEN
                        RAISE EXCEPTION USING ERRCODE = 'LMNAM';
                    END IF;
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
    RETURN jsonb_build_object('pilot', pid, 'row', CASE WHEN pid IS NOT NULL THEN after END, 'released', released);
END
$fn$;
