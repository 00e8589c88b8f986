-- The event store: streams (the concurrency guard), events (immutable, xid8-fenced order),
-- payloads (content-addressed bulky content) and the single-round-trip append function.

CREATE TABLE streams (
    stream_id  text PRIMARY KEY,
    category   text NOT NULL,
    version    bigint NOT NULL CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    category        text NOT NULL,
    stream_version  bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL DEFAULT 1,
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_transaction_idx ON events (transaction_id, global_position);
CREATE INDEX events_category_transaction_idx ON events (category, transaction_id, global_position);

CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % is not allowed', TG_OP
        USING ERRCODE = 'PY002';
END;
$$;

CREATE TRIGGER events_immutable_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

CREATE TABLE payloads (
    hash         text PRIMARY KEY,
    size         integer NOT NULL,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    content      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The latest summary of a stream (e.g. a run's status and totals), written by the append that
-- produced it, in the same transaction: a reader sees its own writes without waiting for the
-- projectors.
CREATE TABLE stream_summaries (
    stream_id  text PRIMARY KEY,
    category   text NOT NULL,
    version    bigint NOT NULL,
    summary    jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_summaries_category_idx ON stream_summaries (category, updated_at);

-- Append a batch to one stream in one round trip. The stream row is claimed with a conditional
-- update *before* any position is drawn, so a losing writer draws nothing and writes nothing.
-- p_expected: -1 = any version, 0 = the stream must not exist, n = the stream is at version n.
-- Call it as the first write of its transaction: readers order by transaction id, and the
-- per-stream advisory lock (which assigns no transaction id) is taken before the first write
-- assigns one, so one stream's events appear in the global order in version order.
CREATE FUNCTION papayya_append(
    p_stream_id text,
    p_category text,
    p_expected bigint,
    p_serialized boolean,
    p_event_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_summary jsonb DEFAULT NULL,
    p_payload_hashes text[] DEFAULT NULL,
    p_payload_types text[] DEFAULT NULL,
    p_payload_contents bytea[] DEFAULT NULL
) RETURNS TABLE (stream_version bigint, transaction_id text, global_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint := cardinality(p_event_ids);
    v_new bigint;
BEGIN
    IF p_serialized THEN
        -- Test oracle: one writer at a time, so commit order equals position order.
        PERFORM pg_advisory_xact_lock(7291036);
    END IF;
    PERFORM pg_advisory_xact_lock(7291, hashtext(p_stream_id));
    IF p_expected = -1 THEN
        UPDATE streams s SET version = s.version + n WHERE s.stream_id = p_stream_id
            RETURNING s.version INTO v_new;
        IF v_new IS NULL THEN
            INSERT INTO streams AS s (stream_id, category, version) VALUES (p_stream_id, p_category, n)
                ON CONFLICT (stream_id) DO UPDATE SET version = s.version + n
                RETURNING s.version INTO v_new;
        END IF;
    ELSIF p_expected = 0 THEN
        INSERT INTO streams AS s (stream_id, category, version) VALUES (p_stream_id, p_category, n)
            ON CONFLICT (stream_id) DO NOTHING
            RETURNING s.version INTO v_new;
    ELSE
        UPDATE streams s SET version = s.version + n
            WHERE s.stream_id = p_stream_id AND s.version = p_expected
            RETURNING s.version INTO v_new;
    END IF;
    IF v_new IS NULL THEN
        RAISE EXCEPTION 'stream % is not at the expected version %', p_stream_id, p_expected
            USING ERRCODE = 'PY001';
    END IF;
    -- Bulky content the events refer to, in the same commit (after the stream is claimed, so
    -- the first write, which assigns the transaction id, is still the stream's).
    IF p_payload_hashes IS NOT NULL THEN
        INSERT INTO payloads (hash, size, content_type, content)
        SELECT u.hash, length(u.content), u.content_type, u.content
          FROM unnest(p_payload_hashes, p_payload_types, p_payload_contents)
               AS u(hash, content_type, content)
        ON CONFLICT (hash) DO NOTHING;
    END IF;
    IF p_summary IS NOT NULL THEN
        INSERT INTO stream_summaries AS s (stream_id, category, version, summary)
        VALUES (p_stream_id, p_category, v_new, p_summary)
        ON CONFLICT (stream_id) DO UPDATE
            SET version = excluded.version, summary = excluded.summary, updated_at = now();
    END IF;
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO events (stream_id, category, stream_version, event_id, event_type,
                            schema_version, data, metadata)
        SELECT p_stream_id, p_category, v_new - n + u.ord, u.event_id, u.event_type,
               u.schema_version, u.data, u.metadata
          FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_metadata)
               WITH ORDINALITY AS u(event_id, event_type, schema_version, data, metadata, ord)
        RETURNING events.global_position
    )
    SELECT v_new, pg_current_xact_id()::text, max(inserted.global_position) FROM inserted;
END;
$$;
