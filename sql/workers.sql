-- Named queries of workers, the sweeper and callbacks (workers/).

-- A claim takes the lease before it starts the attempt (so a worker that dies in between
-- leaves a lease to expire), but never a lease another claim of the same attempt holds.
-- name: take_lease
INSERT INTO run_leases (run_id, attempt, worker, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (run_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at,
       renewed_at = now()
 WHERE run_leases.attempt < EXCLUDED.attempt;

-- The claim that started the attempt holds its lease, whichever claim took the row first.
-- name: hold_lease
INSERT INTO run_leases (run_id, attempt, worker, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (run_id) DO UPDATE
   SET attempt = EXCLUDED.attempt, worker = EXCLUDED.worker, expires_at = EXCLUDED.expires_at,
       renewed_at = now()
 WHERE run_leases.attempt <= EXCLUDED.attempt;

-- A lost claim releases the lease it took for an attempt that nobody started.
-- name: release_claim
DELETE FROM run_leases WHERE run_id = $1 AND attempt = $2 AND worker = $3;

-- Renew this worker's leases; the runs it still holds come back.
-- name: renew_leases
UPDATE run_leases SET expires_at = now() + make_interval(secs => $3), renewed_at = now()
 WHERE worker = $1 AND run_id = ANY($2::text[])
RETURNING run_id;

-- A run's lease as the API shows it, timed by the database's clock (one clock for all).
-- name: run_lease
SELECT expires_at, renewed_at,
       extract(epoch FROM expires_at - now())::float8 AS expires_in,
       extract(epoch FROM now() - renewed_at)::float8 AS renewed_ago
  FROM run_leases WHERE run_id = $1;

-- name: drop_lease
DELETE FROM run_leases WHERE run_id = $1 AND worker = $2;

-- name: expired_leases
SELECT run_id, attempt, worker FROM run_leases
 WHERE expires_at < now() ORDER BY expires_at LIMIT $1;

-- name: drop_expired_lease
DELETE FROM run_leases WHERE run_id = $1 AND attempt = $2 AND expires_at < now();

-- Runs of $1 that were asked to stop (cancellation), or that ended without the worker.
-- name: stopping_runs
SELECT substr(stream_id, 5) AS run_id FROM stream_summaries
 WHERE stream_id = ANY($1::text[])
   AND (summary->>'cancel_requested' = 'true'
        OR summary->>'status' NOT IN ('queued', 'running'));

-- Queued runs waiting longer than $1 seconds: the sweeper makes sure each is in Redis.
-- name: waiting_runs
SELECT substr(stream_id, 5) AS run_id FROM stream_summaries
 WHERE category = 'run' AND summary->>'status' = 'queued'
   AND updated_at < now() - make_interval(secs => $1)
 ORDER BY updated_at LIMIT $2;

-- Runs holding a budget reservation and quiet for $1 seconds: a reservation older than any
-- call may last belongs to a call nobody will settle.
-- name: reserving_runs
SELECT substr(stream_id, 5) AS run_id FROM stream_summaries
 WHERE category = 'run' AND summary->'reserved'->>'input_tokens' <> '0'
   AND updated_at < now() - make_interval(secs => $1)
 ORDER BY updated_at LIMIT $2;

-- name: deployment_for_run
SELECT * FROM deployments
 WHERE agent_id = $1 AND status = 'ready' AND ($2::integer IS NULL OR version = $2)
 ORDER BY version DESC LIMIT 1;

-- A run's callback owed for its terminal event $1 (the projector's insert).
-- name: owe_callback
INSERT INTO callback_deliveries (webhook_id, run_id, project_id, url)
SELECT $1, substr(s.stream_id, 5), s.summary->>'project_id', s.summary->>'callback_url'
  FROM stream_summaries s
 WHERE s.stream_id = $2 AND coalesce(s.summary->>'callback_url', '') <> ''
ON CONFLICT (webhook_id) DO NOTHING;

-- Take due deliveries: each is held for $2 seconds while it is being attempted.
-- name: claim_callbacks
UPDATE callback_deliveries c
   SET next_attempt_at = now() + make_interval(secs => $2), attempts = c.attempts + 1
 WHERE c.webhook_id IN (
       SELECT webhook_id FROM callback_deliveries
        WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING c.*;

-- name: callback_delivered
UPDATE callback_deliveries SET delivered_at = now(), last_error = NULL WHERE webhook_id = $1;

-- name: callback_retry
UPDATE callback_deliveries
   SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3
 WHERE webhook_id = $1;

-- name: callback_gave_up
UPDATE callback_deliveries SET gave_up_at = now(), last_error = $2 WHERE webhook_id = $1;

-- name: project_secret
SELECT value FROM project_secrets WHERE project_id = $1 AND name = $2;

-- name: create_project_secret
INSERT INTO project_secrets (project_id, name, value) VALUES ($1, $2, $3)
ON CONFLICT (project_id, name) DO NOTHING;

-- name: replace_project_secret
INSERT INTO project_secrets (project_id, name, value) VALUES ($1, $2, $3)
ON CONFLICT (project_id, name) DO UPDATE SET value = EXCLUDED.value, created_at = now();

-- The last heartbeat of the agents of these attempts ($1 run ids, $2 their attempts): the
-- in-container runtime's, recorded by the runtime API. An attempt that sent none has no row.
-- name: agent_heartbeats
SELECT h.run_id, h.at
  FROM unnest($1::text[], $2::int[]) AS a (run_id, attempt)
  JOIN run_heartbeats h ON h.run_id = a.run_id AND h.attempt = a.attempt;
