-- A person's own settings in a workspace: their time zone, used for the messages sent to them.
CREATE TABLE user_settings (
    workspace  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace, user_id)
);
