-- Read models folded from the event store by the projectors (projections/), and the
-- checkpoint each projector commits in the same transaction as its writes.
-- Token columns: input counts every input bucket (uncached, cached, cache write), output
-- includes reasoning, cached is the cached-input part of input (papayya.domain.state.Usage).

CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
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
    total_input_tokens   bigint NOT NULL,
    total_output_tokens  bigint NOT NULL,
    total_cached_tokens  bigint NOT NULL,
    total_cost_micro_usd bigint NOT NULL,
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
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    cached_tokens  bigint NOT NULL,
    cost_micro_usd bigint NOT NULL,
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
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    cached_tokens  bigint NOT NULL,
    cost_micro_usd bigint NOT NULL,
    calls          bigint NOT NULL,
    PRIMARY KEY (project_id, agent_id, model, day)
);
CREATE INDEX costs_project_day_idx ON costs (project_id, day);
