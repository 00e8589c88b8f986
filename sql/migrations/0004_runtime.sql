-- The last heartbeat of each run's agent process, kept apart from the event store: heartbeats
-- are not events (DESIGN §4). The worker's leases build on it later.
CREATE TABLE run_heartbeats (
    run_id  text PRIMARY KEY,
    attempt integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
