-- Named queries of deployments (web/routes/deployments.py, workers/).

-- name: next_version
SELECT coalesce(max(version), 0) + 1 FROM deployments WHERE agent_id = $1;

-- name: insert_deployment
INSERT INTO deployments (deployment_id, project_id, agent_id, version, runtime, status,
                         entrypoint, agent_function, source, bundle_sha256, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), now())
RETURNING *;

-- name: set_status
UPDATE deployments
   SET status = $2, image = coalesce($3, image), error_message = $4, updated_at = now()
 WHERE deployment_id = $1
RETURNING *;

-- name: append_build_log
UPDATE deployments SET build_log = right(build_log || $2, $3), updated_at = now()
 WHERE deployment_id = $1;

-- name: deployment
SELECT * FROM deployments WHERE project_id = $1 AND deployment_id = $2;

-- Newest first; $3 is the previous page's last version.
-- name: list_deployments
SELECT * FROM deployments
 WHERE project_id = $1 AND agent_id = $2 AND ($3::integer IS NULL OR version < $3)
 ORDER BY version DESC LIMIT $4;
