-- The review schedule: each scoped pilot carries the time of its next due message (heads-up, nudge) and the
-- counters of the current review cycle (a cycle is one review date in force). A process claims a due pilot with a
-- lease; every message sent is recorded once under its idempotency key (pilot, kind, cycle, seq).
ALTER TABLE pilots ADD COLUMN next_action_at TEXT;
ALTER TABLE pilots ADD COLUMN claimed_until TEXT;
ALTER TABLE pilots ADD COLUMN claimed_by TEXT;
ALTER TABLE pilots ADD COLUMN cycle TEXT;
ALTER TABLE pilots ADD COLUMN heads_up_sent BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN cycle_nudges INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pilots ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pilots ADD COLUMN last_nudge_at TEXT;
ALTER TABLE pilots ADD COLUMN escalated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN posted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE pilots ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pilots ADD COLUMN snoozed_until TEXT;
CREATE INDEX pilots_next_action ON pilots (next_action_at) WHERE next_action_at IS NOT NULL;

CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace  TEXT    NOT NULL,
    pilot_id   INTEGER NOT NULL REFERENCES pilots (id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    cycle      TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    sent_at    TEXT    NOT NULL,
    sent_by    TEXT    NOT NULL
);
CREATE UNIQUE INDEX deliveries_key ON deliveries (pilot_id, kind, cycle, seq);

-- Portfolio digests: one row per workspace and period makes a second post of the same period a no-op.
CREATE TABLE digests (
    workspace TEXT NOT NULL,
    period    TEXT NOT NULL,
    sent_at   TEXT NOT NULL,
    PRIMARY KEY (workspace, period)
);
