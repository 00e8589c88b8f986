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

-- Backfill: the aggregates of the runs rows as they stand, which are the fold of the events up
-- to the runs projector's checkpoint (they commit together, and the projector is not running
-- while migrations run). Each expression is the one projections/aggregates.py computes in
-- Python, in the same float8 arithmetic, so later changes take back exactly what this adds:
-- UTC minutes and days, durations in ms from the interval's exact seconds, and the DDSketch
-- bin ceil(log2(ms) * 34.65620375188817) (ddsketch's LogarithmicMapping at 1% accuracy; the
-- zero bin -2147483648 for durations of 0 or less).
INSERT INTO run_counts (project_id, agent_id, status, runs)
SELECT project_id, agent_id, status, count(*)
  FROM runs
 GROUP BY 1, 2, 3;

INSERT INTO run_days (project_id, agent_id, day, created)
SELECT project_id, agent_id, (created_at AT TIME ZONE 'UTC')::date, count(*)
  FROM runs
 GROUP BY 1, 2, 3;

INSERT INTO run_minutes (project_id, minute, created, completed, failed, cancelled, budget_exceeded)
SELECT project_id, minute, sum(created), sum(completed), sum(failed), sum(cancelled),
       sum(budget_exceeded)
  FROM (SELECT project_id, date_trunc('minute', created_at, 'UTC') AS minute, 1 AS created,
               0 AS completed, 0 AS failed, 0 AS cancelled, 0 AS budget_exceeded
          FROM runs
        UNION ALL
        SELECT project_id, date_trunc('minute', completed_at, 'UTC'), 0,
               (status = 'completed')::int, (status = 'failed')::int,
               (status = 'cancelled')::int, (status = 'budget_exceeded')::int
          FROM runs
         WHERE completed_at IS NOT NULL
           AND status IN ('completed', 'failed', 'cancelled', 'budget_exceeded')) AS contributions
 GROUP BY 1, 2;

INSERT INTO run_durations (project_id, minute, bin, runs)
SELECT project_id, minute, bin, count(*)
  FROM (SELECT project_id, date_trunc('minute', completed_at, 'UTC') AS minute,
               CASE WHEN ms <= 0 THEN -2147483648
                    ELSE ceil(ln(ms) / ln(2::float8) * 34.65620375188817::float8)::integer
               END AS bin
          FROM runs,
               LATERAL (SELECT extract(epoch FROM completed_at - started_at)::float8
                               * 1000::float8 AS ms) AS d
         WHERE completed_at IS NOT NULL AND started_at IS NOT NULL
           AND status IN ('completed', 'failed', 'cancelled', 'budget_exceeded')) AS ended
 GROUP BY 1, 2, 3;
