-- Named queries of the dashboard's own endpoints (the login link). Its reports (overview,
-- spend by day, costliest runs) are in reporting.sql, behind projections/reporting.py.

-- The project a `papayya server` login link signs in to: the oldest one (the bootstrap's).
-- name: first_project
SELECT project_id, name FROM projects ORDER BY created_at, project_id LIMIT 1;
