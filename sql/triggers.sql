-- Named queries of schedules, their fires and webhooks (web/routes/schedules.py,
-- web/routes/webhooks.py, papayya/triggers/scheduler.py). API queries take the caller's
-- project as $1; the scheduler and the signed trigger endpoint work across projects.

-- name: insert_schedule
INSERT INTO schedules (schedule_id, project_id, agent_id, cron_expression, timezone, input,
                       max_steps, budget_cents, overlap_policy, catchup_policy, enabled,
                       next_fire_at, created_at, updated_at)
VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
RETURNING *;

-- name: schedule
SELECT * FROM schedules WHERE project_id = $1 AND schedule_id = $2;

-- name: lock_schedule
SELECT * FROM schedules WHERE project_id = $1 AND schedule_id = $2 FOR UPDATE;

-- Newest first; $3/$4 are the (created_at, schedule_id) of the previous page's last row.
-- name: list_schedules
SELECT * FROM schedules
 WHERE project_id = $1
   AND ($2::text IS NULL OR agent_id = $2)
   AND ($3::timestamptz IS NULL OR (created_at, schedule_id) < ($3::timestamptz, $4::text))
 ORDER BY created_at DESC, schedule_id DESC
 LIMIT $5;

-- name: update_schedule
UPDATE schedules
   SET cron_expression = $3, timezone = $4, input = $5, max_steps = $6, budget_cents = $7,
       overlap_policy = $8, catchup_policy = $9, enabled = $10, next_fire_at = $11,
       updated_at = $12
 WHERE project_id = $1 AND schedule_id = $2
RETURNING *;

-- name: delete_schedule
DELETE FROM schedules WHERE project_id = $1 AND schedule_id = $2 RETURNING *;

-- Newest first; $3 is the fire_at of the previous page's last row.
-- name: list_fires
SELECT * FROM schedule_fires
 WHERE project_id = $1 AND schedule_id = $2
   AND ($3::timestamptz IS NULL OR fire_at < $3)
 ORDER BY fire_at DESC
 LIMIT $4;

-- One due schedule, locked for this transaction; a second scheduler skips it and takes
-- another, so schedulers share the work instead of queueing behind each other.
-- name: claim_due_schedule
SELECT * FROM schedules
 WHERE enabled AND next_fire_at <= $1
 ORDER BY next_fire_at
 LIMIT 1
   FOR UPDATE SKIP LOCKED;

-- The earliest moment a schedule is due, for the scheduler's sleep.
-- name: next_due
SELECT min(next_fire_at) FROM schedules WHERE enabled;

-- name: insert_fire
INSERT INTO schedule_fires (schedule_id, fire_at, project_id, status, run_id, reason, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (schedule_id, fire_at) DO NOTHING;

-- A schedule that cannot fire any more (its timezone left the tz database): paused.
-- name: disable_schedule
UPDATE schedules SET enabled = false WHERE schedule_id = $1;

-- name: advance_schedule
UPDATE schedules SET next_fire_at = $2, last_fire_at = $3, last_run_id = $4
 WHERE schedule_id = $1;

-- name: insert_webhook
INSERT INTO webhooks (webhook_id, project_id, agent_id, name, description, secret,
                      rate_limit_per_minute, created_at, secret_rotated_at, scheme)
VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $8, $9)
RETURNING *;

-- name: project_webhook
SELECT * FROM webhooks WHERE project_id = $1 AND webhook_id = $2;

-- An update reads the row locked, checks the scheme and secret it would have, then writes.
-- name: lock_project_webhook
SELECT * FROM webhooks WHERE project_id = $1 AND webhook_id = $2 FOR UPDATE;

-- name: update_webhook
UPDATE webhooks
   SET name = $3, description = $4, rate_limit_per_minute = $5, scheme = $6, secret = $7,
       secret_rotated_at = $8
 WHERE project_id = $1 AND webhook_id = $2
RETURNING *;

-- name: list_webhooks
SELECT * FROM webhooks
 WHERE project_id = $1 AND agent_id = $2
   AND ($3::timestamptz IS NULL OR (created_at, webhook_id) < ($3::timestamptz, $4::text))
 ORDER BY created_at DESC, webhook_id DESC
 LIMIT $5;

-- name: delete_webhook
DELETE FROM webhooks WHERE project_id = $1 AND webhook_id = $2 RETURNING *;

-- name: rotate_webhook_secret
UPDATE webhooks SET secret = $3, secret_rotated_at = $4
 WHERE project_id = $1 AND webhook_id = $2
RETURNING *;

-- The signed trigger endpoint finds its webhook by id alone: the signature authenticates.
-- name: webhook
SELECT * FROM webhooks WHERE webhook_id = $1;

-- The signed trigger endpoint: the webhook row, locked so that the duplicate check, the
-- rate limit and the delivery insert of one webhook happen one request at a time.
-- name: lock_webhook
SELECT * FROM webhooks WHERE webhook_id = $1 FOR UPDATE;

-- name: delivery
SELECT run_id FROM webhook_deliveries WHERE webhook_id = $1 AND message_id = $2;

-- name: recent_deliveries
SELECT count(*) FROM webhook_deliveries
 WHERE webhook_id = $1 AND received_at > now() - interval '1 minute';

-- name: insert_delivery
INSERT INTO webhook_deliveries (webhook_id, message_id, run_id) VALUES ($1, $2, $3);
