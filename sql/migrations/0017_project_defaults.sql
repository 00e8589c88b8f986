-- A project's defaults for runs that state no budget or max_steps (neither the run nor its
-- agent): the hosted API's 500 cents and 50 steps, for existing projects as for new ones.
-- NULL is "no limit", which only an explicit setting gives (papayya.domain.defaults).
ALTER TABLE projects
    ADD COLUMN default_budget_cents bigint DEFAULT 500
        CHECK (default_budget_cents >= 0),
    ADD COLUMN default_max_steps integer DEFAULT 50
        CHECK (default_max_steps >= 1);
