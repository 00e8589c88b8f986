-- Named queries of the runtime API (web/routes/runtime.py).

-- name: heartbeat
INSERT INTO run_heartbeats (run_id, attempt, at) VALUES ($1, $2, now())
ON CONFLICT (run_id) DO UPDATE SET attempt = EXCLUDED.attempt, at = EXCLUDED.at
RETURNING at;

-- The run of an event, if it exists: whether a retried report was appended already.
-- name: reported
SELECT substr(stream_id, 5) AS run_id FROM events WHERE event_id = $1;
