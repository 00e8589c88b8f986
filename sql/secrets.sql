-- Named queries of project secrets (papayya/readmodels/projectsecrets.py). Values are sealed
-- (papayya/secretbox.py) before they reach these queries; none returns a value to the API.

-- name: set_secret
INSERT INTO project_env_secrets (project_id, name, sealed, key_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (project_id, name)
DO UPDATE SET sealed = EXCLUDED.sealed, key_id = EXCLUDED.key_id, updated_at = now()
RETURNING name, created_at, updated_at;

-- name: list_secrets
SELECT name, created_at, updated_at FROM project_env_secrets
 WHERE project_id = $1 ORDER BY name;

-- name: delete_secret
DELETE FROM project_env_secrets WHERE project_id = $1 AND name = $2
RETURNING name, created_at, updated_at;

-- name: sealed_secrets
SELECT name, sealed, key_id FROM project_env_secrets WHERE project_id = $1 ORDER BY name;

-- Key rotation: every row, locked until the transaction re-seals them all.
-- name: lock_all_secrets
SELECT project_id, name, sealed, key_id FROM project_env_secrets FOR UPDATE;

-- name: reseal_secret
UPDATE project_env_secrets SET sealed = $3, key_id = $4 WHERE project_id = $1 AND name = $2;
