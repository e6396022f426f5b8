-- PostgreSQL only (see the postgres folder): the function that writes a batch of turns in one round trip.
-- SQLite runs in-process, where a statement costs no round trip; its writer runs the statements directly.
SELECT 1;
