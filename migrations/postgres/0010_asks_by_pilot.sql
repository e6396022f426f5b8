-- A new ask supersedes the open ask of the same kind about the same pilot: find it without reading the
-- workspace's every ask (answered ones stay, so they pile up over the years).
CREATE INDEX asks_pilot_open ON asks (workspace, pilot_id, kind) WHERE answered_at IS NULL;
