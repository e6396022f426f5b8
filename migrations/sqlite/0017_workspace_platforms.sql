-- Which chat platform each workspace lives on ('discord', 'slack'), as the adapter that served it said: the
-- scheduler of `lastmile serve` sends a workspace's messages through that platform only.
CREATE TABLE workspace_platforms (
    workspace  TEXT NOT NULL PRIMARY KEY,
    platform   TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
