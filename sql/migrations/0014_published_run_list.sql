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

-- A project's slug, as the hosted API has one: optional, unique when set.
ALTER TABLE projects ADD COLUMN slug text UNIQUE;
