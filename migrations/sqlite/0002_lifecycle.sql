-- The review lifecycle: owner acceptance, production evidence, decisions, questions asked by direct message,
-- and per-workspace settings.
ALTER TABLE pilots ADD COLUMN owner_status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE pilots ADD COLUMN next_review_date TEXT;
ALTER TABLE pilots ADD COLUMN decision TEXT;
ALTER TABLE pilots ADD COLUMN decision_reason TEXT;
ALTER TABLE pilots ADD COLUMN kill_category TEXT;
ALTER TABLE pilots ADD COLUMN scale_override BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN extensions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pilots ADD COLUMN evidence_workflow_live BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN evidence_owner_running BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN pnl_realised REAL;
ALTER TABLE pilots ADD COLUMN nudges_sent INTEGER NOT NULL DEFAULT 0;
UPDATE pilots SET next_review_date = review_date;

-- Append-only: a later item of the same kind supersedes an earlier one; the history stays.
CREATE TABLE evidence (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace   TEXT NOT NULL,
    pilot_id    INTEGER NOT NULL REFERENCES pilots (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    note        TEXT NOT NULL,
    value       REAL,
    period      TEXT,
    source      TEXT,
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX evidence_pilot ON evidence (workspace, pilot_id, id);

-- Questions sent by direct message that wait for their answer (owner acceptance, extension approval).
CREATE TABLE asks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    pilot_id    INTEGER NOT NULL REFERENCES pilots (id) ON DELETE CASCADE,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX asks_open ON asks (workspace, user_id, answered_at, id);

ALTER TABLE conversations ADD COLUMN scratch TEXT NOT NULL DEFAULT '{}';

CREATE TABLE workspace_settings (
    workspace  TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
