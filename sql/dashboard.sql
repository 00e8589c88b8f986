-- Named queries of the dashboard's JSON endpoints (web/routes/overview.py, web/routes/cost.py).
-- They read the projected tables (sql/migrations/0002_read_models.sql), so they reflect the
-- events up to the projectors' lag.

-- Runs created per minute since $2.
-- name: created_per_minute
SELECT date_trunc('minute', created_at) AS minute, count(*) AS runs
  FROM runs
 WHERE project_id = $1 AND created_at >= $2
 GROUP BY 1;

-- Runs that ended since $2, per minute and status.
-- name: ended_per_minute
SELECT date_trunc('minute', completed_at) AS minute, status, count(*) AS runs
  FROM runs
 WHERE project_id = $1 AND completed_at >= $2
   AND status IN ('completed', 'failed', 'cancelled', 'budget_exceeded')
 GROUP BY 1, 2;

-- Durations (start to end) of the runs that ended since $2.
-- name: ended_duration_percentiles
SELECT percentile_cont(ARRAY[0.5, 0.95]::float8[]) WITHIN GROUP (
           ORDER BY extract(epoch FROM completed_at - started_at) * 1000) AS ms
  FROM runs
 WHERE project_id = $1 AND completed_at >= $2 AND started_at IS NOT NULL
   AND status IN ('completed', 'failed', 'cancelled', 'budget_exceeded');

-- Served by the partial index runs_unfinished_idx.
-- name: unfinished_runs
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running
  FROM runs
 WHERE project_id = $1 AND status IN ('queued', 'running');

-- Model spend per UTC day over $2..$3 (both included).
-- name: spend_by_day
SELECT day,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cached_tokens) AS cached_tokens,
       sum(cost_micro_usd) AS cost_micro_usd,
       sum(calls)::bigint AS calls
  FROM costs
 WHERE project_id = $1 AND day >= $2 AND day <= $3
 GROUP BY day;

-- The costliest runs created in [$2, $3).
-- name: costliest_runs
SELECT run_id, agent_id, status, trigger, total_input_tokens, total_output_tokens,
       total_cost_micro_usd, budget_micro_usd, created_at, completed_at
  FROM runs
 WHERE project_id = $1 AND created_at >= $2 AND created_at < $3 AND total_cost_micro_usd > 0
 ORDER BY total_cost_micro_usd DESC, created_at DESC, run_id
 LIMIT $4;

-- The project a `papayya server` login link signs in to: the oldest one (the bootstrap's).
-- name: first_project
SELECT project_id, name FROM projects ORDER BY created_at, project_id LIMIT 1;
