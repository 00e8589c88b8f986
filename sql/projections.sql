-- Named queries of the projectors (projections/). Queries that write a read table name it as
-- {runs}, {steps}, {costs}, {run_counts}...: the projector fills in the live table or its rebuild shadow.

-- name: ensure_checkpoint
INSERT INTO projection_checkpoints (name, cursor) VALUES ($1, $2)
ON CONFLICT (name) DO NOTHING;

-- The first statement of every batch transaction: moves the checkpoint only if it is still
-- where the runner left it, in one round trip. Its row lock serialises the batch with a
-- rebuild's swap (which locks the row too); a batch read before a swap updates no row.
-- A batch that commits also clears a failure the projector had reported.
-- name: advance_checkpoint
UPDATE projection_checkpoints
   SET cursor = $3, updated_at = now(),
       failing_event_id = NULL, failing_cursor = NULL, failing_error = NULL, failing_since = NULL
 WHERE name = $1 AND cursor = $2
RETURNING true;

-- The event the projector cannot get past: kept (with since when) until a batch commits.
-- name: report_failure
UPDATE projection_checkpoints
   SET failing_event_id = $2, failing_cursor = $3, failing_error = $4,
       failing_since = coalesce(failing_since, now())
 WHERE name = $1;

-- name: failing_projections
SELECT c.name, c.failing_event_id, c.failing_cursor, c.failing_error, c.failing_since,
       e.recorded_at AS event_recorded_at
  FROM projection_checkpoints c
  LEFT JOIN events e ON e.event_id = c.failing_event_id
 WHERE c.failing_since IS NOT NULL
 ORDER BY c.name;

-- name: lock_checkpoint
SELECT cursor FROM projection_checkpoints WHERE name = $1 FOR UPDATE;

-- name: save_checkpoint
UPDATE projection_checkpoints
   SET cursor = $2, updated_at = now(),
       failing_event_id = NULL, failing_cursor = NULL, failing_error = NULL, failing_since = NULL
 WHERE name = $1;

-- name: checkpoint
SELECT cursor, updated_at, failing_event_id, failing_cursor, failing_error, failing_since
  FROM projection_checkpoints WHERE name = $1;

-- Leadership: a session lock per projector, held on the connection that writes its batches.
-- name: try_lead
SELECT pg_try_advisory_lock(7292, hashtext($1));

-- name: try_rebuild_lock
SELECT pg_try_advisory_lock(7293, hashtext($1));

-- name: rebuild_unlock
SELECT pg_advisory_unlock(7293, hashtext($1));

-- name: indexes
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = $1::text::regclass;

-- name: constraints
SELECT conname AS name, contype::text || pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE conrelid = $1::text::regclass AND conindid = 0;

-- name: upsert_runs
INSERT INTO {runs} AS r
SELECT * FROM jsonb_populate_recordset(NULL::{runs}, $1::jsonb)
ON CONFLICT (run_id) DO UPDATE SET
    project_id = excluded.project_id,
    agent_id = excluded.agent_id,
    status = excluded.status,
    trigger = excluded.trigger,
    input = excluded.input,
    output = excluded.output,
    output_ref = excluded.output_ref,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    current_step = excluded.current_step,
    total_input_tokens = excluded.total_input_tokens,
    total_output_tokens = excluded.total_output_tokens,
    total_cached_tokens = excluded.total_cached_tokens,
    total_cost_micro_usd = excluded.total_cost_micro_usd,
    budget_micro_usd = excluded.budget_micro_usd,
    max_steps = excluded.max_steps,
    attempt = excluded.attempt,
    replayed_from = excluded.replayed_from,
    replay_from_step = excluded.replay_from_step,
    diverged_at_step = excluded.diverged_at_step,
    deployment_version = excluded.deployment_version,
    idempotency_key = excluded.idempotency_key,
    created_at = excluded.created_at,
    started_at = excluded.started_at,
    completed_at = excluded.completed_at,
    updated_at = excluded.updated_at,
    version = excluded.version;

-- name: upsert_steps
INSERT INTO {steps} AS s
SELECT * FROM jsonb_populate_recordset(NULL::{steps}, $1::jsonb)
ON CONFLICT (run_id, step_number) DO UPDATE SET
    project_id = excluded.project_id,
    step_type = excluded.step_type,
    label = excluded.label,
    status = excluded.status,
    attempt = excluded.attempt,
    provider = excluded.provider,
    model = excluded.model,
    input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens,
    cached_tokens = excluded.cached_tokens,
    cost_micro_usd = excluded.cost_micro_usd,
    duration_ms = excluded.duration_ms,
    tool_calls = excluded.tool_calls,
    output = excluded.output,
    output_ref = excluded.output_ref,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    started_at = excluded.started_at,
    completed_at = excluded.completed_at;

-- name: add_costs
INSERT INTO {costs} AS c
       (project_id, agent_id, model, day, input_tokens, output_tokens, cached_tokens,
        cost_micro_usd, calls)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::numeric[],
                     $6::numeric[], $7::numeric[], $8::numeric[], $9::bigint[])
ON CONFLICT (project_id, agent_id, model, day) DO UPDATE SET
    input_tokens = c.input_tokens + excluded.input_tokens,
    output_tokens = c.output_tokens + excluded.output_tokens,
    cached_tokens = c.cached_tokens + excluded.cached_tokens,
    cost_micro_usd = c.cost_micro_usd + excluded.cost_micro_usd,
    calls = c.calls + excluded.calls;

-- The aggregates of the runs (projections/aggregates.py): add a batch's changes, deleting the
-- rows they bring to zero, so that a rebuild leaves exactly the same rows. One MERGE per table
-- (only the projector's leader writes them, so no concurrent insert can race it).
-- name: add_run_counts
MERGE INTO {run_counts} AS t
USING unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
      AS c(project_id, agent_id, status, runs)
   ON t.project_id = c.project_id AND t.agent_id = c.agent_id AND t.status = c.status
 WHEN MATCHED AND t.runs + c.runs = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET runs = t.runs + c.runs
 WHEN NOT MATCHED THEN INSERT VALUES (c.project_id, c.agent_id, c.status, c.runs);

-- name: add_run_days
MERGE INTO {run_days} AS t
USING unnest($1::text[], $2::text[], $3::date[], $4::bigint[])
      AS c(project_id, agent_id, day, created)
   ON t.project_id = c.project_id AND t.agent_id = c.agent_id AND t.day = c.day
 WHEN MATCHED AND t.created + c.created = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET created = t.created + c.created
 WHEN NOT MATCHED THEN INSERT VALUES (c.project_id, c.agent_id, c.day, c.created);

-- name: add_run_minutes
MERGE INTO {run_minutes} AS t
USING unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[],
             $6::bigint[], $7::bigint[])
      AS c(project_id, minute, created, completed, failed, cancelled, budget_exceeded)
   ON t.project_id = c.project_id AND t.minute = c.minute
 WHEN MATCHED AND t.created + c.created = 0 AND t.completed + c.completed = 0
              AND t.failed + c.failed = 0 AND t.cancelled + c.cancelled = 0
              AND t.budget_exceeded + c.budget_exceeded = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET
    created = t.created + c.created,
    completed = t.completed + c.completed,
    failed = t.failed + c.failed,
    cancelled = t.cancelled + c.cancelled,
    budget_exceeded = t.budget_exceeded + c.budget_exceeded
 WHEN NOT MATCHED THEN INSERT VALUES (c.project_id, c.minute, c.created, c.completed, c.failed,
                                      c.cancelled, c.budget_exceeded);

-- name: add_run_durations
MERGE INTO {run_durations} AS t
USING unnest($1::text[], $2::timestamptz[], $3::integer[], $4::bigint[])
      AS c(project_id, minute, bin, runs)
   ON t.project_id = c.project_id AND t.minute = c.minute AND t.bin = c.bin
 WHEN MATCHED AND t.runs + c.runs = 0 THEN DELETE
 WHEN MATCHED THEN UPDATE SET runs = t.runs + c.runs
 WHEN NOT MATCHED THEN INSERT VALUES (c.project_id, c.minute, c.bin, c.runs);

-- Rebuild DDL; the table and shadow names filled in are plain identifiers the projector checks.
-- name: create_shadow
DROP TABLE IF EXISTS {shadow};
CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL);

-- name: drop_shadow
DROP TABLE IF EXISTS {shadow};

-- name: analyze_shadow
ANALYZE {shadow};

-- name: swap_table
DROP TABLE {table};
ALTER TABLE {shadow} RENAME TO {table};

-- name: rename_index
ALTER INDEX {old} RENAME TO {new};

-- name: rename_constraint
ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new};
