-- PostgreSQL only (see the postgres folder): room in each page lets claiming a pilot update it in place.
SELECT 1;
