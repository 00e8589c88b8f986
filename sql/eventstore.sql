-- Named queries of the Postgres event store (eventstore/postgres.py).

-- name: append
SELECT stream_version, transaction_id, global_position
  FROM papayya_append($1, $2, $3, $4, $5::uuid[], $6::text[], $7::integer[], $8::jsonb[], $9::jsonb[],
                      $10::jsonb, $11::text[], $12::text[], $13::bytea[]);

-- name: events_by_id
SELECT stream_id, stream_version, event_id, event_type, data::text AS data,
       metadata::text AS metadata, transaction_id::text AS transaction_id, global_position
  FROM events WHERE event_id = ANY($1::uuid[])
 ORDER BY stream_version;

-- name: stream_version
SELECT version FROM streams WHERE stream_id = $1;

-- name: read_stream
SELECT global_position, transaction_id::text AS transaction_id, stream_id, category,
       stream_version, event_id, event_type, schema_version, data::text AS data,
       metadata::text AS metadata, recorded_at
  FROM events
 WHERE stream_id = $1 AND stream_version >= $2 AND stream_version <= $3
 ORDER BY stream_version
 LIMIT $4;

-- The fence and the rows come from one statement, hence one snapshot: every row returned has
-- transaction_id below the snapshot's xmin, so no transaction that could still commit an
-- earlier-ordered row is running. fence_xmin lets the caller move its cursor past rows that the
-- filters skipped.
-- name: read_all
WITH fence AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT fence.xmin::text AS fence_xmin, e.*
  FROM fence LEFT JOIN LATERAL (
        SELECT global_position, transaction_id::text AS transaction_id, stream_id, category,
               stream_version, event_id, event_type, schema_version, data::text AS data,
               metadata::text AS metadata, recorded_at
          FROM events
         WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2::bigint)
           AND events.transaction_id < fence.xmin
         ORDER BY events.transaction_id, events.global_position
         LIMIT $3) e ON true;

-- name: read_all_filtered
WITH fence AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT fence.xmin::text AS fence_xmin, e.*
  FROM fence LEFT JOIN LATERAL (
        SELECT global_position, transaction_id::text AS transaction_id, stream_id, category,
               stream_version, event_id, event_type, schema_version, data::text AS data,
               metadata::text AS metadata, recorded_at
          FROM events
         WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2::bigint)
           AND events.transaction_id < fence.xmin
           AND ($4::text[] IS NULL OR events.category = ANY($4::text[]))
           AND ($5::text[] IS NULL OR events.event_type = ANY($5::text[]))
           AND ($6::text[] IS NULL OR events.stream_id = ANY($6::text[]))
         ORDER BY events.transaction_id, events.global_position
         LIMIT $3) e ON true;

-- name: visibility_lag
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(recorded_at)), 0)::float8 AS lag
  FROM events
 WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot());

-- name: put_payload
INSERT INTO payloads (hash, size, content_type, content) VALUES ($1, $2, $3, $4)
ON CONFLICT (hash) DO NOTHING;

-- name: get_payload
SELECT content FROM payloads WHERE hash = $1;

-- name: notify
SELECT pg_notify('papayya_events', '');

-- name: fence
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: summary
SELECT version, summary::text FROM stream_summaries WHERE stream_id = $1;

-- name: summaries
SELECT stream_id, version, summary::text FROM stream_summaries
 WHERE category = $1 AND ($2::text IS NULL OR stream_id > $2)
 ORDER BY stream_id LIMIT $3;

-- The bare minimum to rebuild a stream's state: type, data and time, in version order.
-- name: read_stream_data
SELECT event_type, data::text, recorded_at
  FROM events
 WHERE stream_id = $1 AND stream_version >= $2 AND stream_version <= $3
 ORDER BY stream_version;

-- Group commit: one row per append, in the order given (see papayya_append_batch).
-- name: append_batch
SELECT outcome, stream_version, transaction_id, global_position, message
  FROM papayya_append_batch($1, $2::text[], $3::text[], $4::bigint[], $5::integer[],
                            $6::uuid[], $7::text[], $8::integer[], $9::jsonb[], $10::jsonb[],
                            $11::jsonb[], $12::integer[], $13::text[], $14::text[], $15::bytea[]);
