-- Aggregates of the runs, kept by the runs projector as it folds each run (issue 15, "reads
-- that do not grow with history"): the overview, the usage reports and /metrics read these
-- few rows instead of scanning the runs. Each run adds its present contribution and takes
-- back its previous one, so a run that moves (running -> completed, budget_exceeded ->
-- resumed -> completed) moves between rows and is never counted twice. Rows that reach zero
-- are deleted, so a rebuild writes exactly the rows live processing left.

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

-- The costliest runs of a project in the order /v1/usage/runs lists them, read page by page.
CREATE INDEX runs_project_cost_idx ON runs (project_id, total_cost_micro_usd DESC, created_at DESC, run_id)
    WHERE total_cost_micro_usd > 0;

-- Fill the new tables from the events: the runs projector folds every run again from the
-- start (its rows are whole states, so writing them again changes nothing) and adds each
-- run's contribution once.
UPDATE projection_checkpoints
   SET cursor = 'c0_0', updated_at = now(),
       failing_event_id = NULL, failing_cursor = NULL, failing_error = NULL, failing_since = NULL
 WHERE name = 'runs';
