-- Named queries of image builds (server/builds.py).

-- Builds nobody is working on: a builder touches its deployment at least every $2 seconds
-- (log lines, heartbeats), so one left alone for longer lost its builder (a crash, a stop).
-- Claiming touches it, so two servers cannot both take it.
-- name: claim_stale_builds
UPDATE deployments SET updated_at = now()
 WHERE deployment_id IN (
       SELECT deployment_id FROM deployments
        WHERE runtime = 'docker' AND status = 'building'
          AND updated_at < now() - make_interval(secs => $2)
        ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: touch_build
UPDATE deployments SET updated_at = now() WHERE deployment_id = $1 AND status = 'building';

-- name: build_row
SELECT d.*, a.slug FROM deployments d JOIN agents a USING (agent_id) WHERE d.deployment_id = $1;
