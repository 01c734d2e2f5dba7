-- DDL and DML: every command tag PostgreSQL produces for them, with and without RETURNING.

CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL, qty int DEFAULT 0);

INSERT INTO t (name, qty) VALUES ('a', 1), ('b', 2), ('c', 3);

INSERT INTO t (name) VALUES ('d') RETURNING id, name, qty;

INSERT INTO t (name) SELECT 'gen' || g FROM generate_series(1, 5) g;

UPDATE t SET qty = qty + 10 WHERE qty > 1;

UPDATE t SET qty = 0 WHERE false;

UPDATE t SET qty = qty * 2 WHERE name = 'a' RETURNING *;

DELETE FROM t WHERE name LIKE 'gen%';

DELETE FROM t WHERE id > 100 RETURNING *;

SELECT * FROM t ORDER BY id;

SELECT * FROM t WHERE false;

SELECT name, qty FROM t WHERE qty > 5 ORDER BY name DESC LIMIT 1;

INSERT INTO t (id, name, qty) VALUES (1, 'a2', 5)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, qty = t.qty + excluded.qty
RETURNING id, name, qty;

INSERT INTO t (id, name) VALUES (1, 'ignored') ON CONFLICT DO NOTHING;

CREATE TABLE t2 AS SELECT * FROM t;

SELECT * INTO t3 FROM t WHERE qty > 0;

CREATE TABLE IF NOT EXISTS t4 (x int);

CREATE INDEX t_name_idx ON t (name);

CREATE UNIQUE INDEX t2_id_idx ON t2 (id);

ALTER TABLE t ADD COLUMN note text DEFAULT 'n/a';

ALTER TABLE t ALTER COLUMN qty SET NOT NULL;

ALTER TABLE t RENAME COLUMN note TO remark;

SELECT id, remark FROM t ORDER BY id;

CREATE VIEW v AS SELECT id, upper(name) AS up FROM t;

SELECT * FROM v ORDER BY id;

CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t;

REFRESH MATERIALIZED VIEW mv;

SELECT n FROM mv;

CREATE SEQUENCE s START 100 INCREMENT 5;

SELECT nextval('s'), nextval('s'), currval('s');

CREATE SCHEMA sch;

CREATE TABLE sch.x (k int PRIMARY KEY, v text);

INSERT INTO sch.x VALUES (1, 'one'), (2, 'two');

COMMENT ON TABLE t IS 'the main table';

SELECT obj_description('t'::regclass, 'pg_class');

GRANT SELECT ON t TO PUBLIC;

REVOKE SELECT ON t FROM PUBLIC;

MERGE INTO sch.x AS x
USING (VALUES (2, 'TWO'), (3, 'three')) AS src (k, v) ON x.k = src.k
WHEN MATCHED THEN UPDATE SET v = src.v
WHEN NOT MATCHED THEN INSERT VALUES (src.k, src.v);

SELECT * FROM sch.x ORDER BY k;

WITH moved AS (DELETE FROM sch.x WHERE k > 1 RETURNING *)
SELECT count(*) FROM moved;

TRUNCATE t2;

SELECT count(*) FROM t2;

CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$;

SELECT add_one(41);

CREATE PROCEDURE bump(n int) LANGUAGE plpgsql AS $$
BEGIN
  UPDATE t SET qty = qty + n;
END
$$;

CALL bump(1);

SELECT sum(qty) FROM t;

PREPARE by_name (text) AS SELECT id, qty FROM t WHERE name = $1;

EXECUTE by_name('b');

DEALLOCATE by_name;

ANALYZE t;

VACUUM t2;

-- The plan is forced, so that autovacuum analysing one database and not the other cannot change it.
SET enable_seqscan = off;

EXPLAIN (COSTS OFF) SELECT * FROM t WHERE id = 1;

RESET enable_seqscan;

DROP VIEW v;

DROP MATERIALIZED VIEW mv;

DROP TABLE t2, t3, t4;

DROP TABLE IF EXISTS t2;

DROP SCHEMA sch CASCADE;
