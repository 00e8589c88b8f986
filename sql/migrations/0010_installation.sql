-- The installation's id: one row, made at the first start (not here, so that databases
-- cloned from a migrated template each get their own). Workers check that their control
-- URL serves it, and label their containers with it so that two installations sharing a
-- Docker engine never remove each other's.
CREATE TABLE installation (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    installation_id text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
