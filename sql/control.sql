-- Named queries of the control plane (web/tenancy.py).

-- name: create_project
INSERT INTO projects (project_id, name, slug) VALUES ($1, $2, $3)
RETURNING project_id, name, created_at, slug, default_budget_cents, default_max_steps, default_timeout_seconds;

-- name: project_by_id
SELECT project_id, name, created_at, slug, default_budget_cents, default_max_steps, default_timeout_seconds
  FROM projects WHERE project_id = $1;

-- name: project_by_name
SELECT project_id, name, created_at, slug, default_budget_cents, default_max_steps, default_timeout_seconds
  FROM projects WHERE name = $1;

-- name: update_project
UPDATE projects SET name = coalesce($2, name), slug = CASE WHEN $4 THEN $3 ELSE slug END
 WHERE project_id = $1
RETURNING project_id, name, created_at, slug, default_budget_cents, default_max_steps, default_timeout_seconds;

-- $2: the default time limit of the project's runs in seconds (NULL: the built-in 1 h).
-- name: set_project_timeout
UPDATE projects SET default_timeout_seconds = $2 WHERE project_id = $1
RETURNING project_id, name, created_at, slug, default_budget_cents, default_max_steps, default_timeout_seconds;

-- name: project_defaults_for_update
SELECT default_budget_cents, default_max_steps FROM projects WHERE project_id = $1 FOR UPDATE;

-- name: set_project_defaults
UPDATE projects SET default_budget_cents = $2, default_max_steps = $3 WHERE project_id = $1;

-- name: count_projects
SELECT count(*) FROM projects;

-- name: keyless_default_project
SELECT project_id FROM projects p
 WHERE name = 'default' AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.project_id = p.project_id);

-- name: create_key
INSERT INTO api_keys (key_id, project_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)
RETURNING key_id, project_id, name, prefix, created_at, last_used_at, revoked_at;

-- name: list_keys
SELECT key_id, project_id, name, prefix, created_at, last_used_at, revoked_at
  FROM api_keys WHERE project_id = $1 ORDER BY created_at, key_id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
 WHERE project_id = $1 AND key_id = $2
RETURNING key_id, project_id, name, prefix, created_at, last_used_at, revoked_at;

-- The keys among $1 that are revoked (web.revocation's safety net).
-- name: revoked_keys
SELECT key_id FROM api_keys WHERE key_id = ANY($1::text[]) AND revoked_at IS NOT NULL;

-- Sent in the revoking transaction, so delivered when (and only if) the revocation commits.
-- name: notify_revoked
SELECT pg_notify('papayya_key_revoked', $1);

-- name: authenticate
SELECT project_id, key_id, last_used_at < now() - interval '1 minute' OR last_used_at IS NULL
       AS stale
  FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL;

-- A write per request would cost a commit per request: last use is kept to the minute.
-- name: touch_key
UPDATE api_keys SET last_used_at = now() WHERE key_id = $1;

-- name: secret
SELECT value FROM server_secrets WHERE name = $1;

-- name: create_secret
INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING;

-- name: rate_card
SELECT card::text FROM rate_cards WHERE project_id = $1;

-- name: put_rate_card
INSERT INTO rate_cards (project_id, card) VALUES ($1, $2::jsonb)
ON CONFLICT (project_id) DO UPDATE SET card = excluded.card, updated_at = now();
