-- Current schema: the result of applying every file in migrations/ in order.
-- Kept in step with them by tests/integration/test_migrations.py.

-- The event store: streams (the concurrency guard), events (immutable, xid8-fenced order),
-- payloads (content-addressed bulky content) and the single-round-trip append function.

CREATE TABLE streams (
    stream_id  text PRIMARY KEY,
    category   text NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    category        text NOT NULL,
    stream_version  bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL DEFAULT 1,
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_transaction_idx ON events (transaction_id, global_position);
CREATE INDEX events_category_transaction_idx ON events (category, transaction_id, global_position);

CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed', TG_OP
        USING ERRCODE = 'PY002';
END;
$$;

CREATE TRIGGER events_immutable_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

CREATE TABLE payloads (
    hash         text PRIMARY KEY,
    size         integer NOT NULL,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    content      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The latest summary of a stream (e.g. a run's status and totals), written by the append that
-- produced it, in the same transaction: a reader sees its own writes without waiting for the
-- projectors.
CREATE TABLE stream_summaries (
    stream_id  text PRIMARY KEY,
    category   text NOT NULL,
    version    bigint NOT NULL,
    summary    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_summaries_category_idx ON stream_summaries (category, updated_at);

-- Append a batch to one stream in one round trip. The stream row is claimed with a conditional
-- update *before* any position is drawn, so a losing writer draws nothing and writes nothing.
-- p_expected: -1 = any version, 0 = the stream must not exist, n = the stream is at version n.
-- Call it as the first write of its transaction: readers order by transaction id, and the
-- per-stream advisory lock (which assigns no transaction id) is taken before the first write
-- assigns one, so one stream's events appear in the global order in version order.
CREATE FUNCTION papayya_append(
    p_stream_id text,
    p_category text,
    p_expected bigint,
    p_serialized boolean,
    p_event_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_summary jsonb DEFAULT NULL,
    p_payload_hashes text[] DEFAULT NULL,
    p_payload_types text[] DEFAULT NULL,
    p_payload_contents bytea[] DEFAULT NULL
) RETURNS TABLE (stream_version bigint, transaction_id text, global_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := cardinality(p_event_ids);
    v_new bigint;
BEGIN
    IF p_serialized THEN
        -- Test oracle: one writer at a time, so commit order equals position order.
        PERFORM pg_advisory_xact_lock(7291036);
    END IF;
    PERFORM pg_advisory_xact_lock(7291, hashtext(p_stream_id));
    IF p_expected = -1 THEN
        UPDATE streams s SET version = s.version + n WHERE s.stream_id = p_stream_id
            RETURNING s.version INTO v_new;
        IF v_new IS NULL THEN
            INSERT INTO streams AS s (stream_id, category, version) VALUES (p_stream_id, p_category, n)
                ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n
                RETURNING s.version INTO v_new;
        END IF;
    ELSIF p_expected = 0 THEN
        INSERT INTO streams AS s (stream_id, category, version) VALUES (p_stream_id, p_category, n)
            ON CONFLICT (stream_id) DO NOTHING
            RETURNING s.version INTO v_new;
    ELSE
        UPDATE streams s SET version = s.version + n
            WHERE s.stream_id = p_stream_id AND s.version = p_expected
            RETURNING s.version INTO v_new;
    END IF;
    IF v_new IS NULL THEN
        RAISE EXCEPTION 'stream % is not at the expected version %', p_stream_id, p_expected
            USING ERRCODE = 'PY001';
    END IF;
    -- Bulky content the events refer to, in the same commit (after the stream is claimed, so
    -- the first write, which assigns the transaction id, is still the stream's).
    IF p_payload_hashes IS NOT NULL THEN
        INSERT INTO payloads (hash, size, content_type, content)
        SELECT u.hash, length(u.content), u.content_type, u.content
          FROM unnest(p_payload_hashes, p_payload_types, p_payload_contents)
               AS u(hash, content_type, content)
        ON CONFLICT (hash) DO NOTHING;
    END IF;
    IF p_summary IS NOT NULL THEN
        INSERT INTO stream_summaries AS s (stream_id, category, version, summary)
        VALUES (p_stream_id, p_category, v_new, p_summary)
        ON CONFLICT (stream_id) DO UPDATE
            SET version = excluded.version, summary = excluded.summary, updated_at = now();
    END IF;
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (stream_id, category, stream_version, event_id, event_type,
                            schema_version, data, metadata)
        SELECT p_stream_id, p_category, v_new - n + u.ord, u.event_id, u.event_type,
               u.schema_version, u.data, u.metadata
          FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_metadata)
               WITH ORDINALITY AS u(event_id, event_type, schema_version, data, metadata, ord)
        RETURNING events.global_position
    )
    SELECT v_new, pg_current_xact_id()::text, max(inserted.global_position) FROM inserted;
END;
$$;

-- Group commit: appends to any streams in one transaction, hence one commit and one WAL flush.
-- Each append runs papayya_append in a subtransaction of its own (BEGIN … EXCEPTION), so a
-- conflict or a reused event id fails that append alone; the caller resolves those after the
-- commit, as after a failed single append. Every stream is claimed with a try-lock before the
-- first write draws the transaction id, so the id is drawn after every earlier writer of these
-- streams committed: each stream's versions stay in (transaction id, position) order. A stream
-- that another transaction holds is reported 'busy' (the caller appends it alone) instead of
-- making the whole group wait while it holds a transaction id.
CREATE FUNCTION papayya_append_batch(
    p_serialized boolean,
    p_stream_ids text[],
    p_categories text[],
    p_expected bigint[],
    p_event_counts integer[],
    p_event_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_summaries jsonb[],
    p_payload_counts integer[],
    p_payload_hashes text[],
    p_payload_types text[],
    p_payload_contents bytea[]
) RETURNS TABLE (outcome text, stream_version bigint, transaction_id text,
                 global_position bigint, message text)
LANGUAGE plpgsql AS $$
DECLARE
    busy text[] := '{}';
    v_stream text;
    e_first integer := 1;
    e_last integer;
    p_first integer := 1;
    p_last integer;
    v_constraint text;
BEGIN
    IF p_serialized THEN
        PERFORM pg_advisory_xact_lock(7291036);  -- as papayya_append: the test oracle
    END IF;
    FOR v_stream IN SELECT DISTINCT u.s FROM unnest(p_stream_ids) AS u(s) LOOP
        IF NOT pg_try_advisory_xact_lock(7291, hashtext(v_stream)) THEN
            busy := busy || v_stream;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_stream_ids) LOOP
        e_last := e_first + p_event_counts[i] - 1;
        p_last := p_first + p_payload_counts[i] - 1;
        outcome := 'ok';
        stream_version := NULL;
        transaction_id := NULL;
        global_position := NULL;
        message := NULL;
        IF p_stream_ids[i] = ANY (busy) THEN
            outcome := 'busy';
        ELSE
            BEGIN
                SELECT a.stream_version, a.transaction_id, a.global_position
                  INTO stream_version, transaction_id, global_position
                  FROM papayya_append(
                        p_stream_ids[i], p_categories[i], p_expected[i], p_serialized,
                        p_event_ids[e_first:e_last], p_types[e_first:e_last],
                        p_schema_versions[e_first:e_last], p_data[e_first:e_last],
                        p_metadata[e_first:e_last], p_summaries[i],
                        CASE WHEN p_last >= p_first THEN p_payload_hashes[p_first:p_last] END,
                        CASE WHEN p_last >= p_first THEN p_payload_types[p_first:p_last] END,
                        CASE WHEN p_last >= p_first THEN p_payload_contents[p_first:p_last] END
                  ) AS a;
            EXCEPTION
                WHEN SQLSTATE 'PY001' THEN
                    outcome := 'conflict';
                    message := SQLERRM;
                WHEN unique_violation THEN
                    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
                    outcome := CASE WHEN v_constraint = 'events_event_id_key'
                                    THEN 'duplicate' ELSE 'failed' END;
                    message := SQLERRM;
                WHEN OTHERS THEN
                    -- Anything else: the caller appends it alone and gets its own error.
                    outcome := 'failed';
                    message := SQLERRM;
            END;
        END IF;
        e_first := e_last + 1;
        p_first := p_last + 1;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Tenancy and configuration: projects, hashed API keys, agents. Not events: a key must be
-- revocable and never kept forever in an immutable log; agents' history is also appended as
-- AgentDefined events to their streams.

CREATE TABLE projects (
    project_id text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Optional, as in the hosted API; unique when set.
    slug       text UNIQUE,
    -- The limits of runs that state none (nor their agent): the hosted API's values unless
    -- set; NULL is "no limit", only ever an explicit setting (papayya.domain.defaults).
    default_budget_cents bigint DEFAULT 500 CHECK (default_budget_cents >= 0),
    default_max_steps    integer DEFAULT 50 CHECK (default_max_steps >= 1),
    -- The default time limit of the project's runs in seconds (NULL: 1 h; 0015_run_timeouts).
    default_timeout_seconds integer CHECK (default_timeout_seconds BETWEEN 1 AND 604800)
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    project_id   text NOT NULL REFERENCES projects (project_id),
    name         text,
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_project_idx ON api_keys (project_id, created_at);

CREATE TABLE agents (
    agent_id    text PRIMARY KEY,
    project_id  text NOT NULL REFERENCES projects (project_id),
    name        text NOT NULL,
    slug        text NOT NULL,
    description text,
    config      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_project_slug_key UNIQUE (project_id, slug)
);

-- Idempotency keys of run creation: the first request's run answers every repeat.
CREATE TABLE run_idempotency (
    project_id      text NOT NULL REFERENCES projects (project_id),
    idempotency_key text NOT NULL,
    run_id          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, idempotency_key)
);

-- Read models folded from the event store by the projectors (projections/), and the
-- checkpoint each projector commits in the same transaction as its writes.
-- Token columns: input counts every input bucket (uncached, cached, cache write), output
-- includes reasoning, cached is the cached-input part of input (papayya.domain.state.Usage).
-- Token and cost totals are numeric: they add up any number of events, and no bound on one
-- event keeps such a sum inside a bigint (sql/migrations/0007_bounded_read_models.sql).

-- failing_*: the event a projector cannot get past while it retries; NULL while it is healthy.
CREATE TABLE projection_checkpoints (
    name             text PRIMARY KEY,
    cursor           text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    failing_event_id uuid,
    failing_cursor   text,
    failing_error    text,
    failing_since    timestamptz
);

-- One row per run: its folded state without the steps. Times come from the events, never
-- from the projector's clock, so a rebuild writes the same rows as live processing.
CREATE TABLE runs (
    run_id               text PRIMARY KEY,
    project_id           text NOT NULL,
    agent_id             text NOT NULL,
    status               text NOT NULL,
    trigger              text NOT NULL,
    input                jsonb,
    output               jsonb,
    output_ref           text,
    error_code           text,
    error_message        text,
    current_step         integer NOT NULL,
    total_input_tokens   numeric NOT NULL,
    total_output_tokens  numeric NOT NULL,
    total_cached_tokens  numeric NOT NULL,
    total_cost_micro_usd numeric NOT NULL,
    budget_micro_usd     bigint,
    max_steps            integer,
    attempt              integer NOT NULL,
    replayed_from        text,
    replay_from_step     integer,
    diverged_at_step     integer,
    deployment_version   text,
    idempotency_key      text,
    created_at           timestamptz NOT NULL,
    started_at           timestamptz,
    completed_at         timestamptz,
    updated_at           timestamptz NOT NULL,
    version              bigint NOT NULL
);
CREATE INDEX runs_project_created_idx ON runs (project_id, created_at DESC, run_id);
CREATE INDEX runs_project_status_idx ON runs (project_id, status, created_at DESC);
CREATE INDEX runs_project_agent_idx ON runs (project_id, agent_id, created_at DESC);
-- The recovery sweeper and "active runs" look for unfinished runs across projects.
CREATE INDEX runs_unfinished_idx ON runs (status) WHERE status IN ('queued', 'running');
-- The costliest runs of a project in the order /v1/usage/runs lists them, read page by page.
CREATE INDEX runs_project_cost_idx ON runs (project_id, total_cost_micro_usd DESC, created_at DESC, run_id)
    WHERE total_cost_micro_usd > 0;

CREATE TABLE steps (
    run_id         text NOT NULL,
    step_number    integer NOT NULL,
    project_id     text NOT NULL,
    step_type      text NOT NULL,
    label          text,
    status         text NOT NULL,
    attempt        integer NOT NULL,
    provider       text,
    model          text,
    input_tokens   numeric NOT NULL,
    output_tokens  numeric NOT NULL,
    cached_tokens  numeric NOT NULL,
    cost_micro_usd numeric NOT NULL,
    duration_ms    double precision NOT NULL,
    tool_calls     jsonb NOT NULL,
    output         jsonb,
    output_ref     text,
    error_code     text,
    error_message  text,
    started_at     timestamptz,
    completed_at   timestamptz,
    PRIMARY KEY (run_id, step_number)
);

-- Model spend per project, agent, model and UTC day: additive sums, which is why the
-- checkpoint must commit with them (a batch applied twice would count twice).
CREATE TABLE costs (
    project_id     text NOT NULL,
    agent_id       text NOT NULL,
    model          text NOT NULL,
    day            date NOT NULL,
    input_tokens   numeric NOT NULL,
    output_tokens  numeric NOT NULL,
    cached_tokens  numeric NOT NULL,
    cost_micro_usd numeric NOT NULL,
    calls          bigint NOT NULL,
    PRIMARY KEY (project_id, agent_id, model, day)
);
CREATE INDEX costs_project_day_idx ON costs (project_id, day);

-- Aggregates of the runs kept by the runs projector (0009): each run adds its present
-- contribution and takes back its previous one; rows that reach zero are deleted.

-- Runs per project, agent and status, now (dashboard counts, queue depth, active runs, gauges).
CREATE TABLE run_counts (
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    status     text NOT NULL,
    runs       bigint NOT NULL,
    PRIMARY KEY (project_id, agent_id, status)
);

-- Runs created per project, agent and UTC day (usage reports).
CREATE TABLE run_days (
    project_id text NOT NULL,
    agent_id   text NOT NULL,
    day        date NOT NULL,
    created    bigint NOT NULL,
    PRIMARY KEY (project_id, agent_id, day)
);

-- Per project and UTC minute: runs created in it, and runs whose terminal status was reached
-- in it, by that status (the overview's series).
CREATE TABLE run_minutes (
    project_id      text NOT NULL,
    minute          timestamptz NOT NULL,
    created         bigint NOT NULL,
    completed       bigint NOT NULL,
    failed          bigint NOT NULL,
    cancelled       bigint NOT NULL,
    budget_exceeded bigint NOT NULL,
    PRIMARY KEY (project_id, minute)
);

-- The durations (start to end) of the runs that ended in each minute, as the bins of a
-- DDSketch (projections/sketch.py): the runs per bin. Sketches merge by adding bins, so the
-- percentiles of any window are one GROUP BY over its minutes.
CREATE TABLE run_durations (
    project_id text NOT NULL,
    minute     timestamptz NOT NULL,
    bin        integer NOT NULL,
    runs       bigint NOT NULL,
    PRIMARY KEY (project_id, minute, bin)
);

-- A project's own prices, which win over the maintained price table.
CREATE TABLE rate_cards (
    project_id text PRIMARY KEY REFERENCES projects (project_id),
    card       jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Secrets the server makes for itself on first start (e.g. the key that signs run tokens),
-- shared by every process that uses this database.
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The last heartbeat of each run's agent process, kept apart from the event store: heartbeats
-- are not events (DESIGN §4). The worker's leases build on it later.
CREATE TABLE run_heartbeats (
    run_id  text PRIMARY KEY,
    attempt integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);


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
    expires_at timestamptz NOT NULL,
    -- When the worker last took or renewed it: a lease not renewed for long is a worker gone.
    renewed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX run_leases_expiry_idx ON run_leases (expires_at);

-- The sweeper's look for queued runs that Redis may have lost.
CREATE INDEX stream_summaries_queued_idx ON stream_summaries (updated_at)
    WHERE category = 'run' AND summary->>'status' = 'queued';

-- The sweeper's look for budget reservations nobody settled (a gateway that died mid-call).
CREATE INDEX stream_summaries_reserving_idx ON stream_summaries (updated_at)
    WHERE category = 'run' AND summary->'reserved'->>'input_tokens' <> '0';

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

-- Project secrets: values the project's agents find in their environment, sealed with the
-- server's secrets key (papayya/secretbox.py); key_id says which key sealed each.
CREATE TABLE project_env_secrets (
    project_id text NOT NULL REFERENCES projects (project_id),
    name       text NOT NULL,
    sealed     bytea NOT NULL,
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name)
);

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

-- A webhook endpoint of an agent. The secret (whsec_…, or the sender's own) is kept as it is:
-- verifying a signature needs the key (unlike an API key, which is only compared, so stored
-- hashed). scheme says how the sender signs (papayya/triggers/schemes.py).
CREATE TABLE webhooks (
    webhook_id            text PRIMARY KEY,
    project_id            text NOT NULL REFERENCES projects (project_id),
    agent_id              text NOT NULL REFERENCES agents (agent_id),
    name                  text NOT NULL,
    description           text,
    secret                text NOT NULL,
    rate_limit_per_minute integer NOT NULL,
    created_at            timestamptz NOT NULL,
    secret_rotated_at     timestamptz NOT NULL,
    scheme                text NOT NULL DEFAULT 'standard'
        CHECK (scheme IN ('standard', 'bearer', 'github', 'stripe', 'slack'))
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

-- The installation's id: one row, made at the first start (not by the migration, so that
-- databases cloned from a migrated template each get their own). Workers check that their
-- control URL serves it, and label their containers with it so that two installations
-- sharing a Docker engine never remove each other's.
CREATE TABLE installation (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    installation_id text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Runs are listed from their stream summaries, which the append writes in the same
-- transaction as the events: a caller lists its own run as soon as it is created (read your
-- writes), where the runs read model lags behind its projector. A run summary's times are
-- RFC 3339 with an offset, so reading them as timestamptz does not depend on the session's
-- time zone: the function is immutable in fact, and may be indexed.
CREATE FUNCTION papayya_instant(value text) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN value::timestamptz;

CREATE INDEX stream_summaries_run_list_idx
    ON stream_summaries ((summary->>'project_id'), papayya_instant(summary->>'queued_at') DESC,
                         (summary->>'run_id'))
    WHERE category = 'run';
