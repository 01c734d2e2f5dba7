-- Grouped tables' state (engine::incremental::groups) is updated in place by every apply: with
-- room left on its pages the new row versions stay on the same page (HOT updates, which write
-- no index entry and are pruned by later reads). New state tables are made with this
-- fillfactor (groups::STATE_FILLFACTOR); those made before get it here. It applies to the pages
-- written from now on. A state table the service account may not alter (its owner a role the
-- service account is not a member of) keeps its setting: its applies stay correct, only slower.
DO $fill$
DECLARE
    state regclass;
BEGIN
    FOR state IN
        SELECT c.oid::regclass
          FROM pg_class c
         WHERE c.relnamespace = 'dyngate'::regnamespace AND c.relkind = 'r' AND c.relname ~ '^state_[0-9]+$'
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s SET (fillfactor = 40)', state);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'dyngate: % keeps its fillfactor (not the service account''s to alter)', state;
        END;
    END LOOP;
END
$fill$;
