-- dyngate catalog, version 6: the Flink engine.

-- Flink objects declared through the gateway (CREATE / ALTER of TABLE, VIEW, FUNCTION in the Flink
-- database), in the order they ran. Flink's default catalog lives in the memory of one SQL
-- Gateway session: dyngate replays these statements, in id order, into every session it opens.
CREATE TABLE dyngate.flink_statement (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- '<flink database>.<name>' as written (Flink's names are case-sensitive).
    object_name text        NOT NULL,
    object_kind text        NOT NULL CHECK (object_kind IN ('TABLE', 'VIEW', 'FUNCTION')),
    -- CREATE or ALTER.
    verb        text        NOT NULL CHECK (verb IN ('CREATE', 'ALTER')),
    statement   text        NOT NULL,
    owner_role  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flink_statement_by_object ON dyngate.flink_statement (object_name);

-- Bumped by every change of flink_statement, under the same transaction: a gateway whose session
-- replayed an older version (another gateway changed the objects) replays again before its next
-- Flink statement.
CREATE TABLE dyngate.flink_catalog_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO dyngate.flink_catalog_version VALUES (true, 0);

-- Dynamic tables refreshed by Flink: the query's columns as Flink types them, the streaming job of
-- a CONTINUOUS table, the job's state as last seen and when its latest checkpoint completed (the
-- rows up to then are in the table: the table's data time), and the savepoint it was stopped with
-- (and the query that savepoint belongs to: a savepoint is only restored into the same query).
ALTER TABLE dyngate.dynamic_table
    ADD COLUMN flink_columns   jsonb,
    ADD COLUMN flink_job_id    text,
    ADD COLUMN flink_job_state text,
    ADD COLUMN flink_data_time timestamptz,
    ADD COLUMN savepoint_path  text,
    ADD COLUMN savepoint_query text;

-- A continuously maintained table on Flink has no refreshes: its data time is its job's latest
-- checkpoint. The job and its state are shown.
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
       greatest(last.data_time, t.flink_data_time) AS last_refresh_data_time,
       greatest(last.ended_at, t.flink_data_time) AS last_refresh_at,
       now() - greatest(last.data_time, t.flink_data_time) AS lag,
       coalesce(now() - greatest(last.data_time, t.flink_data_time) <= t.freshness, false) AS freshness_met,
       t.time_zone,
       coalesce(t.resolved_query, t.query) AS resolved_query,
       t.refresh_action,
       t.refresh_action_reason,
       t.flink_job_id AS engine_job_id,
       t.flink_job_state AS engine_job_state
  FROM dyngate.dynamic_table t
  LEFT JOIN LATERAL (
        SELECT r.data_time, r.ended_at
          FROM dyngate.refresh r
         WHERE r.dynamic_table_id = t.id AND r.state = 'SUCCEEDED'
         ORDER BY r.id DESC
         LIMIT 1) last ON true;

-- The engine's own id of a refresh (Flink's job id) and where it ran.
ALTER TABLE dyngate.refresh
    ADD COLUMN engine_job_id text,
    ADD COLUMN cluster_info  jsonb;

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
       r.changes,
       r.engine_job_id,
       r.cluster_info
  FROM dyngate.refresh r;

-- The Flink objects, with the values of secret-looking options ('password', '...secret...',
-- '...token...') masked.
CREATE VIEW dyngate.flink_objects AS
SELECT s.object_name,
       s.object_kind,
       s.verb,
       regexp_replace(s.statement,
                      '(''[^'']*(password|secret|token)[^'']*''\s*=\s*)''([^'']|'''')*''',
                      '\1''***''', 'gi') AS statement,
       s.owner_role,
       s.created_at
  FROM dyngate.flink_statement s
 ORDER BY s.id;

GRANT SELECT ON dyngate.flink_objects TO PUBLIC;
