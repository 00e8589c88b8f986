-- Tenancy and configuration: projects, hashed API keys, agents. Not events: a key must be
-- revocable and never kept forever in an immutable log; agents' history is also appended as
-- AgentDefined events to their streams.

CREATE TABLE projects (
    project_id text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
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
