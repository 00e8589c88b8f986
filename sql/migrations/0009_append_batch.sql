-- Group commit (eventstore/postgres.py): many appends, one transaction.

-- Group commit: appends to any streams in one transaction, hence one commit and one WAL flush.
-- Each append runs papayya_append in a subtransaction of its own (BEGIN … EXCEPTION), so a
-- conflict or a reused event id fails that append alone; the caller resolves those after the
-- commit, as after a failed single append. Every stream is claimed with a try-lock before the
-- first write draws the transaction id, so the id is drawn after every earlier writer of these
-- streams committed: each stream's versions stay in (transaction id, position) order. A stream
-- that another transaction holds is reported 'busy' (the caller appends it alone) instead of
-- making the whole group wait while it holds a transaction id.
CREATE FUNCTION papayya_append_batch(
    p_serialized boolean,
    p_stream_ids text[],
    p_categories text[],
    p_expected bigint[],
    p_event_counts integer[],
    p_event_ids uuid[],
    p_types text[],
    p_schema_versions integer[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_summaries jsonb[],
    p_payload_counts integer[],
    p_payload_hashes text[],
    p_payload_types text[],
    p_payload_contents bytea[]
) RETURNS TABLE (outcome text, stream_version bigint, transaction_id text,
                 global_position bigint, message text)
LANGUAGE plpgsql AS $$
DECLARE
    busy text[] := '{}';
    v_stream text;
    e_first integer := 1;
    e_last integer;
    p_first integer := 1;
    p_last integer;
    v_constraint text;
BEGIN
    IF p_serialized THEN
        PERFORM pg_advisory_xact_lock(7291036);  -- as papayya_append: the test oracle
    END IF;
    FOR v_stream IN SELECT DISTINCT u.s FROM unnest(p_stream_ids) AS u(s) LOOP
        IF NOT pg_try_advisory_xact_lock(7291, hashtext(v_stream)) THEN
            busy := busy || v_stream;
        END IF;
    END LOOP;
    FOR i IN 1 .. cardinality(p_stream_ids) LOOP
        e_last := e_first + p_event_counts[i] - 1;
        p_last := p_first + p_payload_counts[i] - 1;
        outcome := 'ok';
        stream_version := NULL;
        transaction_id := NULL;
        global_position := NULL;
        message := NULL;
        IF p_stream_ids[i] = ANY (busy) THEN
            outcome := 'busy';
        ELSE
            BEGIN
                SELECT a.stream_version, a.transaction_id, a.global_position
                  INTO stream_version, transaction_id, global_position
                  FROM papayya_append(
                        p_stream_ids[i], p_categories[i], p_expected[i], p_serialized,
                        p_event_ids[e_first:e_last], p_types[e_first:e_last],
                        p_schema_versions[e_first:e_last], p_data[e_first:e_last],
                        p_metadata[e_first:e_last], p_summaries[i],
                        CASE WHEN p_last >= p_first THEN p_payload_hashes[p_first:p_last] END,
                        CASE WHEN p_last >= p_first THEN p_payload_types[p_first:p_last] END,
                        CASE WHEN p_last >= p_first THEN p_payload_contents[p_first:p_last] END
                  ) AS a;
            EXCEPTION
                WHEN SQLSTATE 'PY001' THEN
                    outcome := 'conflict';
                    message := SQLERRM;
                WHEN unique_violation THEN
                    GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
                    outcome := CASE WHEN v_constraint = 'events_event_id_key'
                                    THEN 'duplicate' ELSE 'failed' END;
                    message := SQLERRM;
                WHEN OTHERS THEN
                    -- Anything else: the caller appends it alone and gets its own error.
                    outcome := 'failed';
                    message := SQLERRM;
            END;
        END IF;
        e_first := e_last + 1;
        p_first := p_last + 1;
        RETURN NEXT;
    END LOOP;
END;
$$;
