-- Pilots, conversations in progress, and the audit trail. Every row belongs to a workspace.
CREATE TABLE pilots (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace     TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    name_key      TEXT    NOT NULL,
    stage         TEXT    NOT NULL,
    registered_by TEXT    NOT NULL,
    registered_at TEXT    NOT NULL,
    home_channel  TEXT    NOT NULL,
    workflow      TEXT,
    owner         TEXT,
    sponsor       TEXT,
    pnl_line      TEXT,
    pnl_unit      TEXT,
    pnl_baseline  REAL,
    pnl_target    REAL,
    review_date   TEXT,
    updated_at    TEXT    NOT NULL
);
CREATE UNIQUE INDEX pilots_workspace_name_key ON pilots (workspace, name_key);

CREATE TABLE conversations (
    workspace         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    flow              TEXT    NOT NULL,
    at                TEXT    NOT NULL,
    pilot_id          INTEGER REFERENCES pilots (id) ON DELETE CASCADE,
    channel           TEXT    NOT NULL,
    return_to_confirm BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (workspace, user_id)
);

CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    pilot_id  INTEGER,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    field     TEXT,
    old_value TEXT,
    new_value TEXT,
    at        TEXT NOT NULL
);
CREATE INDEX audit_workspace_pilot ON audit (workspace, pilot_id, id);
