-- V4: incremental refresh on the PostgreSQL engine (src/engine/incremental).

-- How each dynamic table is refreshed: INCREMENTAL (only what changed in its sources) or FULL,
-- and, when FULL, why (what users see in DESCRIBE, SHOW and the dynamic_tables view).
ALTER TABLE dyngate.dynamic_table
    ADD COLUMN refresh_action text NOT NULL DEFAULT 'FULL' CHECK (refresh_action IN ('FULL', 'INCREMENTAL')),
    ADD COLUMN refresh_action_reason text;

-- The snapshot an incremental table's content is up to date with: the changes of transactions
-- visible in it are applied, the others not yet. No row: the next refresh is full. A table of its
-- own, written only under the table's refresh lock: a refresh's REPEATABLE READ transaction
-- writes it, and must not meet other writers of the catalog row (the refresh loop's claims).
CREATE TABLE dyngate.applied (
    dynamic_table_id bigint PRIMARY KEY REFERENCES dyngate.dynamic_table (id) ON DELETE CASCADE,
    snapshot         pg_snapshot NOT NULL
);
UPDATE dyngate.dynamic_table
   SET refresh_action_reason = 'created before incremental refresh existed; ALTER DYNAMIC TABLE ... SET (''refresh.action'' = ''auto'') decides again';

-- Changes applied by a refresh (captured source rows read).
ALTER TABLE dyngate.refresh ADD COLUMN changes bigint;

-- When a table's definition last changed, read with a snapshot of its own: a refresh's single
-- statement calls it after taking the table's refresh lock, to find out whether an ALTER
-- committed while it waited (the statement's own snapshot predates the wait).
CREATE FUNCTION dyngate.altered_at(bigint) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT altered_at::text FROM dyngate.dynamic_table WHERE id = $1);
END $$;
REVOKE ALL ON FUNCTION dyngate.altered_at(bigint) FROM PUBLIC;

-- Change capture, one per source table that an incremental dynamic table reads: statement-level
-- triggers with transition tables append the changed rows (sign -1 for old rows, +1 for new)
-- to the log table, with the writer's transaction id; a TRUNCATE is recorded in
-- dyngate.truncation. Writers never wait on each other: they only append.
CREATE TABLE dyngate.change_capture (
    source     oid PRIMARY KEY,
    log_table  text NOT NULL UNIQUE,
    -- The source's columns the log keeps (those some dynamic table reads), by number: the log's
    -- column for attribute n is "a<n>", whatever the source column is called now.
    attnums    int2[] NOT NULL,
    -- The source's column names the capture functions were written with (see
    -- dyngate.capture_functions: a rename writes them again).
    names      text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- (Re)writes the capture functions of source `src` from dyngate.change_capture, with the
-- source's current column names (a transition table's columns go by name). SECURITY DEFINER
-- functions with every name qualified and no operator: a writer's search_path cannot divert
-- them. A captured column since dropped logs NULL.
CREATE FUNCTION dyngate.capture_functions(src oid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture$
DECLARE
    cc record;
    log text;
    logcols text;
    srccols text;
    cur_names text[];
    body text;
BEGIN
    SELECT * INTO cc FROM dyngate.change_capture WHERE source = src;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    log := format('dyngate.%I', cc.log_table);
    SELECT coalesce(string_agg(format(', %I', 'a' || u.n), '' ORDER BY u.ord), ''),
           coalesce(string_agg(CASE WHEN a.attname IS NULL THEN ', NULL' ELSE format(', %I', a.attname) END, '' ORDER BY u.ord), ''),
           coalesce(array_agg(a.attname::text ORDER BY u.ord), '{}')
      INTO logcols, srccols, cur_names
      FROM unnest(cc.attnums) WITH ORDINALITY AS u(n, ord)
      LEFT JOIN pg_attribute a ON a.attrelid = src AND a.attnum = u.n AND NOT a.attisdropped;
    body := 'CREATE OR REPLACE FUNCTION dyngate.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $f$ '
         || 'BEGIN INSERT INTO %s ("dyngate$sign"%s) %s; RETURN NULL; END $f$';
    EXECUTE format(body, 'capture_insert_' || src, log, logcols,
                   format('SELECT ''1''::pg_catalog.int2%s FROM dyngate_new', srccols));
    EXECUTE format(body, 'capture_delete_' || src, log, logcols,
                   format('SELECT ''-1''::pg_catalog.int2%s FROM dyngate_old', srccols));
    EXECUTE format(body, 'capture_update_' || src, log, logcols,
                   format('SELECT ''-1''::pg_catalog.int2%1$s FROM dyngate_old UNION ALL SELECT ''1''::pg_catalog.int2%1$s FROM dyngate_new', srccols));
    EXECUTE format('CREATE OR REPLACE FUNCTION dyngate.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $f$ '
                || 'BEGIN INSERT INTO dyngate.truncation (source) VALUES (%s::pg_catalog.oid); RETURN NULL; END $f$',
                   'capture_truncate_' || src, src);
    EXECUTE format('REVOKE ALL ON FUNCTION dyngate.%I(), dyngate.%I(), dyngate.%I(), dyngate.%I() FROM PUBLIC',
                   'capture_insert_' || src, 'capture_delete_' || src, 'capture_update_' || src, 'capture_truncate_' || src);
    UPDATE dyngate.change_capture SET names = cur_names WHERE source = src;
END
$capture$;
REVOKE ALL ON FUNCTION dyngate.capture_functions(oid) FROM PUBLIC;

CREATE TABLE dyngate.truncation (
    source oid NOT NULL,
    xid    xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX truncation_by_source ON dyngate.truncation (source);

-- The guard after ALTER (V2) also keeps the capture functions in step with renamed columns.
CREATE OR REPLACE FUNCTION dyngate.after_alter() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard$
DECLARE
    lost record;
BEGIN
    SELECT t.schema_name, t.table_name INTO lost
      FROM dyngate.dynamic_table t
     WHERE TG_TAG IN ('ALTER TABLE', 'ALTER SCHEMA') AND to_regclass(format('%I.%I', t.schema_name, t.table_name)) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cannot rename or move dynamic table %.%', lost.schema_name, lost.table_name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create it again under the new name and drop the old one with DROP DYNAMIC TABLE.';
    END IF;
    -- With only pg_catalog on the search_path (this function's setting), every other name comes
    -- out schema-qualified, as engine::postgres::bind_query prints it.
    UPDATE dyngate.dynamic_table t
       SET resolved_query = d.def
      FROM (SELECT t2.id, btrim(rtrim(btrim(pg_get_viewdef(v.oid, true)), ';')) AS def
              FROM dyngate.dynamic_table t2
              JOIN pg_class v ON v.relnamespace = 'dyngate'::regnamespace AND v.relname = t2.query_view) d
     WHERE t.id = d.id AND t.resolved_query IS DISTINCT FROM d.def;
    -- A captured source whose columns were renamed (or dropped): its capture functions are
    -- written again, with the names its transition tables now have.
    PERFORM dyngate.capture_functions(cc.source)
       FROM dyngate.change_capture cc
      WHERE cc.names IS DISTINCT FROM (
            SELECT coalesce(array_agg(a.attname::text ORDER BY u.ord), '{}')
              FROM unnest(cc.attnums) WITH ORDINALITY AS u(n, ord)
              LEFT JOIN pg_attribute a ON a.attrelid = cc.source AND a.attnum = u.n AND NOT a.attisdropped);
END
$guard$;

-- The views show how each table is refreshed, and what each refresh applied.
CREATE OR REPLACE VIEW dyngate.dynamic_tables AS
SELECT t.schema_name,
       t.table_name,
       format('%s %s', t.freshness_n, t.freshness_unit) AS freshness,
       t.logical_mode,
       t.refresh_mode,
       t.status,
       t.engine,
       t.scheduler,
       t.owner_role,
       t.comment,
       t.query,
       t.options,
       t.created_at,
       t.altered_at,
       last.data_time AS last_refresh_data_time,
       last.ended_at AS last_refresh_at,
       now() - last.data_time AS lag,
       coalesce(now() - last.data_time <= t.freshness, false) AS freshness_met,
       t.time_zone,
       coalesce(t.resolved_query, t.query) AS resolved_query,
       t.refresh_action,
       t.refresh_action_reason
  FROM dyngate.dynamic_table t
  LEFT JOIN LATERAL (
        SELECT r.data_time, r.ended_at
          FROM dyngate.refresh r
         WHERE r.dynamic_table_id = t.id AND r.state = 'SUCCEEDED'
         ORDER BY r.id DESC
         LIMIT 1) last ON true;

CREATE OR REPLACE VIEW dyngate.refresh_history AS
SELECT r.schema_name,
       r.table_name,
       r.job_id,
       r.trigger,
       r.state,
       r.action,
       r.schedule_time,
       r.data_time,
       r.started_at,
       r.ended_at,
       r.ended_at - r.started_at AS duration,
       r.rows_written,
       r.error_code,
       r.error_message,
       r.partition_spec,
       r.scheduler_run_id,
       r.changes
  FROM dyngate.refresh r;
