-- PostgreSQL only (see the postgres folder): SQLite frees an abandoned draft's name in the writer
-- (`release_abandoned_name` in src/store/commit.rs).
SELECT 1;
