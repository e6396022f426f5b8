-- The portfolio lists overdue pilots by their review date in force: one index serves that order.
CREATE INDEX pilots_workspace_stage_due ON pilots (workspace, stage, next_review_date);
