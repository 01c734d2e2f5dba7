-- dyngate catalog, version 2: each dynamic table's query bound to the objects it names, guards
-- against dropping, renaming or moving a dynamic table (or dropping what it reads) with plain DDL,
-- a time zone for schedules, and one history row per job and table.

ALTER TABLE dyngate.dynamic_table
    -- The query with every name resolved (schema-qualified), as PostgreSQL prints it back:
    -- refreshes run this text, so a table created later earlier in someone's search_path cannot
    -- change what a dynamic table reads. NULL for tables created before version 2 (they run `query`).
    ADD COLUMN resolved_query text,
    -- A view in schema dyngate holding the query: through it PostgreSQL records what the dynamic
    -- table reads, so `DROP TABLE source` is refused (2BP01) like for any view, and
    -- `ALTER TABLE source DROP COLUMN` of a column it reads too. Never selected from.
    ADD COLUMN query_view text,
    -- The time zone in which schedules are laid out (a daily FULL table refreshes at midnight
    -- there) and partition values derived from the schedule time are formatted.
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

-- One history row per job and table: a refresh's row is written whole when it ends, or first as
-- EXECUTING (when it runs long) and then updated; the index serves job look-ups too.
CREATE UNIQUE INDEX refresh_once_per_job ON dyngate.refresh (job_id, dynamic_table_id);
DROP INDEX dyngate.refresh_by_job;

-- The refresh endpoint's idempotence (per table and schedule time) covers the calls of external
-- schedulers too, which are recorded as SCHEDULED with the scheduler's run id.
DROP INDEX dyngate.refresh_api_once;
CREATE UNIQUE INDEX refresh_endpoint_once ON dyngate.refresh (dynamic_table_id, schedule_time)
    WHERE (trigger = 'API' OR scheduler_run_id IS NOT NULL) AND state NOT IN ('FAILED', 'CANCELLED');

-- Plain DDL that would drop a dynamic table, or a view holding one's query (a source dropped
-- with CASCADE, a schema dropped with CASCADE), is refused: the catalog would be left naming a
-- table that is gone. DROP DYNAMIC TABLE marks its own transaction with `dyngate.dropping`.
CREATE FUNCTION dyngate.guard_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard$
DECLARE
    obj record;
    dt record;
    dropping text := coalesce(current_setting('dyngate.dropping', true), '');
    what text;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE object_type IN ('table', 'view') LOOP
        SELECT t.id, t.schema_name, t.table_name,
               (t.schema_name = obj.schema_name AND t.table_name = obj.object_name) AS is_table
          INTO dt
          FROM dyngate.dynamic_table t
         WHERE (obj.object_type = 'table' AND t.schema_name = obj.schema_name AND t.table_name = obj.object_name)
            OR (obj.object_type = 'view' AND obj.schema_name = 'dyngate' AND t.query_view = obj.object_name)
         LIMIT 1;
        CONTINUE WHEN NOT FOUND OR dropping = dt.id::text;
        IF dt.is_table AND obj.original THEN
            RAISE EXCEPTION '"%.%" is a dynamic table', dt.schema_name, dt.table_name
                USING ERRCODE = 'wrong_object_type',
                      HINT = format('Use DROP DYNAMIC TABLE %I.%I to remove it.', dt.schema_name, dt.table_name);
        END IF;
        SELECT string_agg(d.object_type || ' ' || d.object_identity, ', ') INTO what
          FROM pg_event_trigger_dropped_objects() d WHERE d.original;
        RAISE EXCEPTION 'cannot drop % because dynamic table %.% %', coalesce(what, 'it'), dt.schema_name, dt.table_name,
                CASE WHEN dt.is_table THEN 'is in it' ELSE 'reads it' END
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = format('Drop the dynamic table first: DROP DYNAMIC TABLE %I.%I', dt.schema_name, dt.table_name);
    END LOOP;
END
$guard$;
REVOKE ALL ON FUNCTION dyngate.guard_drop() FROM PUBLIC;

CREATE EVENT TRIGGER dyngate_guard_drop ON sql_drop EXECUTE FUNCTION dyngate.guard_drop();

-- After DDL that renames or moves things: renaming a dynamic table, or its schema, or moving it to
-- another schema, with plain DDL would leave the catalog naming a table that is gone, so it is
-- refused. Renaming what a dynamic table reads is fine (its view follows the objects, not their
-- names): the resolved queries are printed again so that refreshes use the new names.
CREATE FUNCTION dyngate.after_alter() RETURNS event_trigger
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
END
$guard$;
REVOKE ALL ON FUNCTION dyngate.after_alter() FROM PUBLIC;

CREATE EVENT TRIGGER dyngate_after_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER SCHEMA', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FUNCTION', 'ALTER TYPE')
    EXECUTE FUNCTION dyngate.after_alter();

-- The views users query show the time zone and the resolved query too.
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
       coalesce(t.resolved_query, t.query) AS resolved_query
  FROM dyngate.dynamic_table t
  LEFT JOIN LATERAL (
        SELECT r.data_time, r.ended_at
          FROM dyngate.refresh r
         WHERE r.dynamic_table_id = t.id AND r.state = 'SUCCEEDED'
         ORDER BY r.id DESC
         LIMIT 1) last ON true;
