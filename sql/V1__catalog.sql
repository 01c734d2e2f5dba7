-- dyngate catalog, version 1: the registry of dynamic tables.
-- Later versions add the refresh history, schedules and the user-facing views; a migration is
-- never edited once released (the runner refuses a changed checksum), only followed by another.

CREATE TABLE dyngate.dt (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_name     text        NOT NULL,
    table_name      text        NOT NULL,
    -- The statement as the user typed it, and the query with names resolved.
    definition      text        NOT NULL,
    query           text        NOT NULL,
    freshness       interval,
    logical_mode    text        NOT NULL CHECK (logical_mode IN ('AUTOMATIC', 'CONTINUOUS', 'FULL')),
    refresh_mode    text        NOT NULL CHECK (refresh_mode IN ('CONTINUOUS', 'FULL')),
    status          text        NOT NULL CHECK (status IN ('INITIALIZING', 'ACTIVATED', 'SUSPENDED')),
    engine          text        NOT NULL DEFAULT 'postgres',
    scheduler       text,
    scheduler_handle jsonb,
    options         jsonb       NOT NULL DEFAULT '{}',
    owner_role      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    altered_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_name, table_name)
);

COMMENT ON TABLE dyngate.dt IS 'Dynamic tables known to dyngate (one row per table).';
