-- Named queries of the reporting repository (projections/reporting.py): the overview, the
-- usage reports and the /metrics gauges. They read the aggregates the projectors keep
-- (run_counts, run_days, run_minutes, run_durations, costs: sql/migrations/0009 and 0002),
-- a few rows per agent, model, day or minute however many runs there are; and the runs
-- table only through an index, a page at a time.

-- Whether a run's agent is one that was defined (else it gets no label of its own).
-- name: agent_exists
SELECT EXISTS (SELECT 1 FROM agents WHERE agent_id = $1);

-- Queued and running runs of every project (the /metrics gauges).
-- name: unfinished_runs
SELECT coalesce(sum(runs) FILTER (WHERE status = 'queued'), 0)::bigint AS queued,
       coalesce(sum(runs) FILTER (WHERE status = 'running'), 0)::bigint AS running
  FROM run_counts
 WHERE status IN ('queued', 'running');

-- name: project_unfinished_runs
SELECT coalesce(sum(runs) FILTER (WHERE status = 'queued'), 0)::bigint AS queued,
       coalesce(sum(runs) FILTER (WHERE status = 'running'), 0)::bigint AS running
  FROM run_counts
 WHERE project_id = $1 AND status IN ('queued', 'running');

-- name: runs_by_status
SELECT status, sum(runs)::bigint AS runs
  FROM run_counts
 WHERE project_id = $1
 GROUP BY status;

-- Runs created and runs ended per minute since $2.
-- name: minutes_since
SELECT minute, created, completed, failed, cancelled, budget_exceeded
  FROM run_minutes
 WHERE project_id = $1 AND minute >= $2;

-- The merged duration sketch of the runs that ended since $2: runs per bin.
-- name: duration_bins_since
SELECT bin, sum(runs)::bigint AS runs
  FROM run_durations
 WHERE project_id = $1 AND minute >= $2
 GROUP BY bin;

-- Model spend of a project today ($2) and over the seven UTC days ending today.
-- name: spend
SELECT coalesce(sum(cost_micro_usd) FILTER (WHERE day = $2), 0) AS today,
       coalesce(sum(cost_micro_usd), 0) AS last_7_days
  FROM costs
 WHERE project_id = $1 AND day > $2 - 7 AND day <= $2;

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

-- Runs created on the UTC days $2..$3 (both included) per agent.
-- name: runs_created_by_agent
SELECT agent_id, sum(created)::bigint AS runs
  FROM run_days
 WHERE project_id = $1 AND day >= $2 AND day <= $3
 GROUP BY agent_id
 HAVING sum(created) <> 0
 ORDER BY agent_id;

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

-- The costliest runs created in [$2, $3). The order is runs_project_cost_idx's, so a page
-- reads its rows off the index instead of sorting the project's runs.
-- name: costliest_runs
SELECT run_id, agent_id, status, trigger, total_input_tokens, total_output_tokens,
       total_cost_micro_usd, budget_micro_usd, created_at, completed_at
  FROM runs
 WHERE project_id = $1 AND created_at >= $2 AND created_at < $3 AND total_cost_micro_usd > 0
 ORDER BY total_cost_micro_usd DESC, created_at DESC, run_id
 LIMIT $4;

-- The next page: the runs after the one ($5 cost, $6 created_at, $7 run_id) that ended the
-- previous page. The row comparison starts the index scan at that run; the second condition
-- skips the runs of the same cost and time up to it (run_id ascends within them).
-- name: costliest_runs_after
SELECT run_id, agent_id, status, trigger, total_input_tokens, total_output_tokens,
       total_cost_micro_usd, budget_micro_usd, created_at, completed_at
  FROM runs
 WHERE project_id = $1 AND created_at >= $2 AND created_at < $3 AND total_cost_micro_usd > 0
   AND (total_cost_micro_usd, created_at) <= ($5::numeric, $6::timestamptz)
   AND NOT (total_cost_micro_usd = $5 AND created_at = $6 AND run_id <= $7)
 ORDER BY total_cost_micro_usd DESC, created_at DESC, run_id
 LIMIT $4;
