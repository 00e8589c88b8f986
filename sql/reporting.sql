-- Named queries of the HTTP API's read side (web/): usage reports and the metrics gauges.
-- They read the projected tables (sql/migrations/0002_read_models.sql).

-- Whether a run's agent is one that was defined (else it gets no label of its own).
-- name: agent_exists
SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = $1);

-- Served by the partial index runs_unfinished_idx, so a scrape stays cheap however many
-- runs have finished.
-- name: unfinished_runs
SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
       count(*) FILTER (WHERE status = 'running') AS running
  FROM runs
 WHERE status IN ('queued', 'running');

-- Model spend of a project over the UTC days $2..$3 (both included).
-- name: usage_totals
SELECT coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cached_tokens), 0) AS cached_tokens,
       coalesce(sum(cost_micro_usd), 0) AS cost_micro_usd,
       coalesce(sum(calls), 0)::bigint AS calls
  FROM costs
 WHERE project_id = $1 AND day >= $2 AND day <= $3;

-- name: usage_by_agent_model
SELECT agent_id, model,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cached_tokens) AS cached_tokens,
       sum(cost_micro_usd) AS cost_micro_usd,
       sum(calls)::bigint AS calls
  FROM costs
 WHERE project_id = $1 AND day >= $2 AND day <= $3
 GROUP BY agent_id, model
 ORDER BY agent_id, model;

-- Runs created in [$2, $3) per agent.
-- name: usage_runs_by_agent
SELECT agent_id, count(*) AS runs
  FROM runs
 WHERE project_id = $1 AND created_at >= $2 AND created_at < $3
 GROUP BY agent_id
 ORDER BY agent_id;
