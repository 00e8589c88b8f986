-- Project secrets (docs/security.md): values the project's agents find in their environment.
-- A value is sealed with the server's secrets key (AES-256-GCM, papayya/secretbox.py) and
-- never stored or shown in the clear; key_id says which key sealed it. Apart from
-- project_secrets, which holds the server-made signing keys (whsec_) the server itself reads,
-- so that no name a user picks can meet one of those.
CREATE TABLE project_env_secrets (
    project_id text NOT NULL REFERENCES projects (project_id),
    name       text NOT NULL,
    sealed     bytea NOT NULL,
    key_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name)
);
