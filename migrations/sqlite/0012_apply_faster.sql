-- PostgreSQL only (see the postgres folder): a faster version of the function that writes a batch of turns.
SELECT 1;
