-- Claiming a pilot for the schedule updates columns no index covers (claimed_until, claimed_by): with room
-- left in each page PostgreSQL updates such rows in place (HOT), without touching the four indexes.
ALTER TABLE pilots SET (fillfactor = 80);
