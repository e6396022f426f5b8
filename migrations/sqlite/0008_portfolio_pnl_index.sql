-- The portfolio's P&L lines are grouped by their name (case and spaces ignored) and unit: an index on exactly
-- that, covering the figures summed, reads them in group order with no sort.
CREATE INDEX pilots_pnl_lines ON pilots (workspace, LOWER(TRIM(pnl_line)), pnl_unit, stage, pnl_target, pnl_baseline, pnl_realised, pnl_line);
