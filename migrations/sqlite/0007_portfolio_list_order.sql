-- The portfolio's lists are ordered by review date, then name: with the name in the index, a list of ten reads
-- ten entries instead of sorting every overdue pilot of the workspace.
DROP INDEX pilots_workspace_stage_due;
CREATE INDEX pilots_workspace_stage_due_name ON pilots (workspace, stage, next_review_date, name);
