-- Triggers (DESIGN §9): cron schedules with a record of every fire, and signed webhooks.

-- A cron schedule of an agent. next_fire_at is the earliest fire not yet handled: the
-- scheduler locks due rows (FOR UPDATE SKIP LOCKED), fires them and moves it on.
CREATE TABLE schedules (
    schedule_id     text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (project_id),
    agent_id        text NOT NULL REFERENCES agents (agent_id),
    cron_expression text NOT NULL,
    timezone        text NOT NULL,
    input           text,
    max_steps       integer,
    budget_cents    bigint,
    overlap_policy  text NOT NULL CHECK (overlap_policy IN ('skip', 'allow')),
    catchup_policy  text NOT NULL CHECK (catchup_policy IN ('latest', 'all', 'none')),
    enabled         boolean NOT NULL,
    next_fire_at    timestamptz NOT NULL,
    last_fire_at    timestamptz,
    last_run_id     text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX schedules_project_created_idx ON schedules (project_id, created_at DESC, schedule_id);
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled;

-- Every fire of a schedule: the run it started, or why it was skipped. The primary key is
-- what makes a fire happen once however many schedulers run.
CREATE TABLE schedule_fires (
    schedule_id text NOT NULL REFERENCES schedules (schedule_id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    project_id  text NOT NULL,
    status      text NOT NULL CHECK (status IN ('started', 'skipped')),
    run_id      text,
    reason      text,
    detail      text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, fire_at),
    CHECK ((status = 'started') = (run_id IS NOT NULL))
);

-- A webhook endpoint of an agent. The secret (whsec_…) is kept as it is: verifying a
-- signature needs the key (unlike an API key, which is only compared, so stored hashed).
CREATE TABLE webhooks (
    webhook_id            text PRIMARY KEY,
    project_id            text NOT NULL REFERENCES projects (project_id),
    agent_id              text NOT NULL REFERENCES agents (agent_id),
    name                  text NOT NULL,
    description           text,
    secret                text NOT NULL,
    rate_limit_per_minute integer NOT NULL,
    created_at            timestamptz NOT NULL,
    secret_rotated_at     timestamptz NOT NULL
);
CREATE INDEX webhooks_project_agent_idx ON webhooks (project_id, agent_id, created_at DESC);

-- Accepted webhook requests by webhook-id: a repeat answers the run of the first, and the
-- recent rows are the per-webhook rate limit's sliding window.
CREATE TABLE webhook_deliveries (
    webhook_id  text NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    message_id  text NOT NULL,
    run_id      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, message_id)
);
CREATE INDEX webhook_deliveries_recent_idx ON webhook_deliveries (webhook_id, received_at);
