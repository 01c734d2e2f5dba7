-- dyngate catalog, version 1: dynamic tables and their refresh history.
-- A migration is never edited once released (the runner refuses a changed checksum), only
-- followed by another.

-- One row per dynamic table. The table itself is an ordinary PostgreSQL table of the same name.
CREATE TABLE dyngate.dynamic_table (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name      text        NOT NULL,
    table_name       text        NOT NULL,
    -- The CREATE statement as the user typed it, and its parts.
    definition       text        NOT NULL,
    query            text        NOT NULL,
    columns          text,
    comment          text,
    partitioned_by   text[]      NOT NULL DEFAULT '{}',
    options          jsonb       NOT NULL DEFAULT '{}',
    -- Freshness as the user wrote it (n and unit) and as an interval.
    freshness_n      integer     NOT NULL CHECK (freshness_n > 0),
    freshness_unit   text        NOT NULL CHECK (freshness_unit IN ('SECOND', 'MINUTE', 'HOUR', 'DAY')),
    freshness        interval    NOT NULL,
    logical_mode     text        NOT NULL CHECK (logical_mode IN ('AUTOMATIC', 'CONTINUOUS', 'FULL')),
    refresh_mode     text        NOT NULL CHECK (refresh_mode IN ('CONTINUOUS', 'FULL')),
    status           text        NOT NULL CHECK (status IN ('INITIALIZING', 'ACTIVATED', 'SUSPENDED')),
    engine           text        NOT NULL DEFAULT 'postgres',
    scheduler        text,
    scheduler_handle jsonb,
    owner_role       text        NOT NULL,
    -- The last schedule slot a gateway claimed for this table: claiming is a compare-and-set on
    -- this column, so two gateways sharing the catalog never fire the same slot.
    last_slot        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    altered_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, table_name)
);

-- One row per refresh, kept after the table is dropped (dynamic_table_id becomes NULL).
CREATE TABLE dyngate.refresh (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dynamic_table_id bigint      REFERENCES dyngate.dynamic_table (id) ON DELETE SET NULL,
    schema_name      text        NOT NULL,
    table_name       text        NOT NULL,
    -- One id per refresh; a refresh endpoint call covering several tables gives them one id.
    job_id           text        NOT NULL,
    trigger          text        NOT NULL CHECK (trigger IN ('CREATION', 'SCHEDULED', 'MANUAL', 'API')),
    state            text        NOT NULL CHECK (state IN ('SCHEDULED', 'EXECUTING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED')),
    action           text        CHECK (action IN ('NO_DATA', 'FULL', 'INCREMENTAL')),
    schedule_time    timestamptz,
    -- The moment the sources were read: the refreshed content is as of this time.
    data_time        timestamptz,
    started_at       timestamptz,
    ended_at         timestamptz,
    rows_written     bigint,
    error_code       text,
    error_message    text,
    partition_spec   jsonb,
    scheduler_run_id text
);
CREATE INDEX refresh_by_table ON dyngate.refresh (dynamic_table_id, id DESC);
CREATE INDEX refresh_by_job ON dyngate.refresh (job_id);
-- The refresh endpoint is idempotent per (table, scheduleTime): a retried scheduler task finds the
-- refresh the first call started (unless that one failed, when a retry refreshes again).
CREATE UNIQUE INDEX refresh_api_once ON dyngate.refresh (dynamic_table_id, schedule_time)
    WHERE trigger = 'API' AND state NOT IN ('FAILED', 'CANCELLED');

-- What users query: every dynamic table with its current lag (now minus the data time of the last
-- successful refresh) and whether the freshness target is met.
CREATE VIEW dyngate.dynamic_tables AS
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
       coalesce(now() - last.data_time <= t.freshness, false) AS freshness_met
  FROM dyngate.dynamic_table t
  LEFT JOIN LATERAL (
        SELECT r.data_time, r.ended_at
          FROM dyngate.refresh r
         WHERE r.dynamic_table_id = t.id AND r.state = 'SUCCEEDED'
         ORDER BY r.id DESC
         LIMIT 1) last ON true;

CREATE VIEW dyngate.refresh_history AS
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
       r.scheduler_run_id
  FROM dyngate.refresh r;

-- Everyone may look at the catalog through the views (as in pg_catalog); only the gateway's
-- service account writes it.
GRANT USAGE ON SCHEMA dyngate TO PUBLIC;
GRANT SELECT ON dyngate.dynamic_tables, dyngate.refresh_history TO PUBLIC;
