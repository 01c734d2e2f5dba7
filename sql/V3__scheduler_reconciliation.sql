-- V3: what reconciling the catalog with external workflow schedulers needs.

-- The catalog's identity. External schedulers may be shared by several catalogs (other databases,
-- other clusters); dyngate marks what it creates there with this id, so that reconciliation only
-- ever removes schedules of its own catalog.
CREATE TABLE dyngate.identity (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    catalog_id uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dyngate.identity DEFAULT VALUES;

-- Schedules to remove from an external scheduler after the catalog stopped needing them (a DROP,
-- a move to another scheduler, a table now CONTINUOUS) whose removal failed at the time: the
-- reconciliation loop retries them, with backoff, until the scheduler confirms.
CREATE TABLE dyngate.scheduler_cleanup (
    id              bigserial PRIMARY KEY,
    scheduler       text NOT NULL,
    handle          jsonb NOT NULL,
    table_name      text NOT NULL,
    reason          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now()
);

-- Options given with ALTER DYNAMIC TABLE ... RESUME WITH (...): the configuration each scheduled
-- refresh call carries from then on (the external schedulers send it in "configuration").
ALTER TABLE dyngate.dynamic_table ADD COLUMN refresh_options jsonb NOT NULL DEFAULT '{}'::jsonb;
