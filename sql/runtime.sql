-- Named queries of the runtime API (web/routes/runtime.py).

-- name: heartbeat
INSERT INTO run_heartbeats (run_id, attempt, at) VALUES ($1, $2, now())
ON CONFLICT (run_id) DO UPDATE SET attempt = EXCLUDED.attempt, at = EXCLUDED.at
RETURNING at;

-- The run of an event, if it exists: whether a retried report was appended already.
-- name: reported
SELECT substr(stream_id, 5) AS run_id FROM events WHERE event_id = $1;

-- Liveness of local runs (papayya/liveness.py): runs that no worker leases, kept alive by
-- the SDK's heartbeats (the SDK writes one as it opens a run: a run with none is not local).
-- Whether run $1 is one whose heartbeat stopped for $2 seconds: nobody would hear a
-- cancellation, so it is cancelled at once.
-- name: silent_local_run
SELECT EXISTS (SELECT 1 FROM run_heartbeats
                WHERE run_id = $1 AND at <= now() - make_interval(secs => $2))
   AND NOT EXISTS (SELECT 1 FROM run_leases WHERE run_id = $1) AS silent;

-- Running local runs that have shown no sign of life (a heartbeat, an event) for $1
-- seconds: their process is gone for good.
-- name: abandoned_runs
SELECT h.run_id, (s.summary->>'attempt')::int AS attempt
  FROM run_heartbeats h
  JOIN stream_summaries s ON s.stream_id = 'run-' || h.run_id
 WHERE s.summary->>'status' = 'running'
   AND NOT EXISTS (SELECT 1 FROM run_leases l WHERE l.run_id = h.run_id)
   AND greatest(h.at, s.updated_at) < now() - make_interval(secs => $1)
 ORDER BY h.at
 LIMIT $2;

-- The run's last heartbeat, and whether a worker leases it.
-- name: last_heartbeat
SELECT h.at, EXISTS (SELECT 1 FROM run_leases l WHERE l.run_id = $1) AS leased
  FROM run_heartbeats h WHERE h.run_id = $1;

-- name: leased
SELECT EXISTS (SELECT 1 FROM run_leases WHERE run_id = $1);
