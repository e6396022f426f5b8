-- PostgreSQL only (see the postgres folder). SQLite looks a pilot up by its rowid (`id` is the INTEGER PRIMARY
-- KEY), which its planner always prefers for an equality on it.
SELECT 1;
