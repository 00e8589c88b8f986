-- Cloud execution (DESIGN §8): deployments, workers' leases on runs, and the callback outbox.

-- What a worker starts for a run of an agent: a module path for the `process` runtime, or a
-- bundle built into an image for `docker`. History is in the deployment-<id> streams; this row
-- is written in the same transaction as each of its events.
CREATE TABLE deployments (
    deployment_id  text PRIMARY KEY,
    project_id     text NOT NULL REFERENCES projects (project_id),
    agent_id       text NOT NULL REFERENCES agents (agent_id),
    version        integer NOT NULL CHECK (version >= 1),
    runtime        text NOT NULL CHECK (runtime IN ('process', 'docker')),
    status         text NOT NULL CHECK (status IN ('building', 'ready', 'failed')),
    entrypoint     text NOT NULL,
    agent_function text,
    source         text,
    bundle_sha256  text,
    image          text,
    error_message  text,
    build_log      text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deployments_agent_version_key UNIQUE (agent_id, version)
);
CREATE INDEX deployments_ready_idx ON deployments (agent_id, version DESC) WHERE status = 'ready';

-- A worker's hold on the attempt it runs: renewed every heartbeat, and when it expires the
-- recovery sweeper queues the run again (AttemptLost) or fails it (worker_lost).
CREATE TABLE run_leases (
    run_id     text PRIMARY KEY,
    attempt    integer NOT NULL,
    worker     text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX run_leases_expiry_idx ON run_leases (expires_at);

-- The sweeper's look for queued runs that Redis may have lost.
CREATE INDEX stream_summaries_queued_idx ON stream_summaries (updated_at)
    WHERE category = 'run' AND summary->>'status' = 'queued';

-- Callbacks owed: one row per terminal event of a run with a callback_url, written by the
-- callbacks projector in the transaction of its checkpoint, so each is owed exactly once.
CREATE TABLE callback_deliveries (
    webhook_id      text PRIMARY KEY,
    run_id          text NOT NULL,
    project_id      text NOT NULL,
    url             text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    gave_up_at      timestamptz,
    last_error      text
);
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

-- Per-project secrets, e.g. the whsec_ key that signs callbacks.
CREATE TABLE project_secrets (
    project_id text NOT NULL REFERENCES projects (project_id),
    name       text NOT NULL,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name)
);
