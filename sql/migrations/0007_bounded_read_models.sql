-- Read models that hold every value a valid event can carry (issue 14 §2), and a projector's
-- failure kept where /readyz and `papayya projections status` can see it.
--
-- A stored event's numbers fit the columns they are copied into (papayya.domain.bounds bounds
-- them by bigint and integer). Totals are another matter: a run's tokens and cost, a step's
-- (several calls may be recorded on one step) and a day's in `costs` add up any number of
-- events, and no bound on one event keeps an unbounded number of them inside a bigint. So the
-- totals are numeric, which no such sum can overflow; `costs.calls` adds 1 per event and stays
-- a bigint (9.2e18 events is beyond any store).

ALTER TABLE runs
    ALTER COLUMN total_input_tokens TYPE numeric,
    ALTER COLUMN total_output_tokens TYPE numeric,
    ALTER COLUMN total_cached_tokens TYPE numeric,
    ALTER COLUMN total_cost_micro_usd TYPE numeric;

ALTER TABLE steps
    ALTER COLUMN input_tokens TYPE numeric,
    ALTER COLUMN output_tokens TYPE numeric,
    ALTER COLUMN cached_tokens TYPE numeric,
    ALTER COLUMN cost_micro_usd TYPE numeric;

ALTER TABLE costs
    ALTER COLUMN input_tokens TYPE numeric,
    ALTER COLUMN output_tokens TYPE numeric,
    ALTER COLUMN cached_tokens TYPE numeric,
    ALTER COLUMN cost_micro_usd TYPE numeric;

-- The event a projector cannot get past while it retries; NULL while it is healthy.
ALTER TABLE projection_checkpoints
    ADD COLUMN failing_event_id uuid,
    ADD COLUMN failing_cursor   text,
    ADD COLUMN failing_error    text,
    ADD COLUMN failing_since    timestamptz;
