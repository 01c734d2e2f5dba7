-- Change capture from the write-ahead log (logical decoding), beside the triggers of V4.
--
-- A source is captured one way or the other (change_capture.method). Captured from the WAL, it
-- is in the publication dyngate.wal_capture names, with REPLICA IDENTITY FULL (so UPDATEs and
-- DELETEs carry the old row whole; what it was before is kept to be put back when the capture
-- goes), and has no triggers: writers do nothing more than write. The changes reach the same
-- log tables as the triggers' do, copied from the replication slot by the collector
-- (engine::incremental::collect), which remembers how far it got.
ALTER TABLE dyngate.change_capture
    ADD COLUMN method text NOT NULL DEFAULT 'trigger' CHECK (method IN ('trigger', 'wal')),
    -- The source's pg_class.relreplident before dyngate set it to FULL ('d', 'n', 'f', 'i'),
    -- and for 'i' the index it used.
    ADD COLUMN former_replica_identity "char",
    ADD COLUMN former_replica_index text,
    -- Captured from the WAL: the snapshot the capture started with. Changes of transactions it
    -- sees are in the first fill already, and are not copied.
    ADD COLUMN since pg_snapshot;

-- At most one row: the slot this catalog decodes (slots belong to the whole cluster, so its
-- name carries the catalog's identity), the publication (of this database) naming the sources,
-- and the position up to which the changes of committed transactions are in the logs.
CREATE TABLE dyngate.wal_capture (
    slot        name PRIMARY KEY,
    publication name NOT NULL,
    position    pg_lsn NOT NULL
);

-- Capture functions are for sources captured by triggers only.
CREATE OR REPLACE FUNCTION dyngate.capture_functions(src oid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture$
DECLARE
    cc record;
    log text;
    logcols text;
    srccols text;
    cur_names text[];
    body text;
BEGIN
    SELECT * INTO cc FROM dyngate.change_capture WHERE source = src AND method = 'trigger';
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
