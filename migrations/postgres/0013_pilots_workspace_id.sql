-- Every lookup of one pilot names its workspace and id. Without statistics (a new database, or a table that grew
-- faster than autovacuum analyses it), the planner costed the primary key on id and the indexes that start with
-- the workspace alike, and could pick the latter: a lookup then read every pilot of the workspace (hundreds of
-- buffers per statement in the benchmark, figure 1). An index on exactly (workspace, id) matches both conditions,
-- so the planner takes it whatever it knows. Neither column ever changes, so pilots' updates stay HOT.
CREATE UNIQUE INDEX pilots_workspace_id ON pilots (workspace, id);
