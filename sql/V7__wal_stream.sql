-- The WAL capture streams from its slot (engine::incremental::stream) and writes what it reads
-- into the logs in batches, one transaction each. A refresh's transaction cannot see the
-- batches that commit after its snapshot, so it copies their rows from another connection:
-- this table names each batch by its transaction, with the span of the WAL it covers, so that
-- a refresh finds the batches its snapshot does not see and checks they leave no hole.
CREATE TABLE dyngate.wal_batch (
    batch    xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
    -- The recorded position before and after the batch (dyngate.wal_capture.position).
    after    pg_lsn NOT NULL,
    upto     pg_lsn NOT NULL,
    written  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wal_batch_written ON dyngate.wal_batch (written);


-- Grouped tables keep, for each numeric sum, how many of a group's values have its largest
-- scale (engine::incremental::groups): state tables made before lack those columns. Their
-- tables' next refresh is full, which lays their state out anew.
DELETE FROM dyngate.applied a
 WHERE to_regclass(format('dyngate.%I', 'state_' || a.dynamic_table_id)) IS NOT NULL;

-- The guard after ALTER (V2, V4) also keeps the logs' columns in step with a captured column
-- whose type changed.
CREATE OR REPLACE FUNCTION dyngate.after_alter() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard$
DECLARE
    lost record;
    retyped record;
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
    -- A captured column may change its type once no dynamic table reads it any more (while one
    -- does, its view keeps the type from changing). Its log column follows, so that writers'
    -- rows still fit the log; the values logged before are dropped: nobody reads them.
    FOR retyped IN
        SELECT format('dyngate.%I', cc.log_table) AS log, l.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS ty
          FROM dyngate.change_capture cc
          JOIN pg_attribute a ON a.attrelid = cc.source AND a.attnum = ANY (cc.attnums) AND NOT a.attisdropped
          JOIN pg_attribute l ON l.attrelid = format('dyngate.%I', cc.log_table)::regclass AND l.attname = 'a' || a.attnum
         WHERE (l.atttypid, l.atttypmod) IS DISTINCT FROM (a.atttypid, a.atttypmod)
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE %s USING NULL', retyped.log, retyped.col, retyped.ty);
    END LOOP;
END
$guard$;
