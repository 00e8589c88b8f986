-- Named queries of the REST API's agents and runs (web/routes/agents.py, web/routes/runs.py).
-- Every query takes the caller's project as $1: nothing outside it can be read or written.

-- An agent's version is the version of its stream agent-<agent_id> (one AgentDefined per
-- definition), written in the same transaction as the row.
-- name: agent
SELECT a.agent_id, a.project_id, a.name, a.slug, a.description, a.config::text AS config,
       a.created_at, a.updated_at, coalesce(s.version, 0) AS version,
       (SELECT max(d.version) FROM deployments d
         WHERE d.agent_id = a.agent_id AND d.status = 'ready') AS deployment,
       (SELECT p.default_timeout_seconds FROM projects p
         WHERE p.project_id = a.project_id) AS project_timeout_seconds
  FROM agents a LEFT JOIN streams s ON s.stream_id = 'agent-' || a.agent_id
 WHERE a.project_id = $1 AND (a.agent_id = $2 OR a.slug = $2);

-- Newest first; $2/$3 are the (created_at, agent_id) of the previous page's last row.
-- name: list_agents
SELECT a.agent_id, a.project_id, a.name, a.slug, a.description, a.config::text AS config,
       a.created_at, a.updated_at, coalesce(s.version, 0) AS version
  FROM agents a LEFT JOIN streams s ON s.stream_id = 'agent-' || a.agent_id
 WHERE a.project_id = $1
   AND ($2::timestamptz IS NULL OR (a.created_at, a.agent_id) < ($2::timestamptz, $3::text))
 ORDER BY a.created_at DESC, a.agent_id DESC
 LIMIT $4;

-- name: insert_agent
INSERT INTO agents (project_id, agent_id, name, slug, description, config, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $7)
RETURNING agent_id, project_id, name, slug, description, config::text AS config,
          created_at, updated_at;

-- name: update_agent
UPDATE agents SET name = $3, slug = $4, description = $5, config = $6::jsonb, updated_at = $7
 WHERE project_id = $1 AND agent_id = $2
RETURNING agent_id, project_id, name, slug, description, config::text AS config,
          created_at, updated_at;

-- Insert-first idempotency: the first request binds the key to its run id; a concurrent
-- repeat waits here for that insert to commit and then gets no row.
-- name: claim_idempotency_key
INSERT INTO run_idempotency (project_id, idempotency_key, run_id) VALUES ($1, $2, $3)
ON CONFLICT (project_id, idempotency_key) DO NOTHING
RETURNING run_id;

-- name: idempotent_run
SELECT run_id FROM run_idempotency WHERE project_id = $1 AND idempotency_key = $2;

-- The runs read model (projections/runs.py), newest first. $2 is an agent id or slug.
-- name: list_runs
-- From the summaries the append writes with the events, so a run is listed as soon as its
-- creation commits (the runs read model would show it only once projected). The order
-- matches stream_summaries_run_list_idx (queued_at DESC, run_id), so the cursor condition is
-- spelled out instead of a row comparison.
SELECT s.summary::text
  FROM stream_summaries s
 WHERE s.category = 'run'
   AND s.summary->>'project_id' = $1
   AND ($2::text IS NULL OR s.summary->>'agent_id' = $2 OR s.summary->>'agent_id' = (
            SELECT a.agent_id FROM agents a WHERE a.project_id = $1 AND a.slug = $2))
   AND ($3::text IS NULL OR s.summary->>'status' = $3)
   AND ($4::timestamptz IS NULL OR papayya_instant(s.summary->>'queued_at') < $4
        OR (papayya_instant(s.summary->>'queued_at') = $4 AND s.summary->>'run_id' > $5::text))
 ORDER BY papayya_instant(s.summary->>'queued_at') DESC, s.summary->>'run_id'
 LIMIT $6;
