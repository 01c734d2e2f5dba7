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
