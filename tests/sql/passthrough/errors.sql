-- Errors: every field of the ErrorResponse (SQLSTATE, message, detail, hint, position, context,
-- schema/table/column/constraint names, file, line, routine) must arrive as PostgreSQL wrote it.

SELEC 1;

SELECT 1 +;

SELECT
  1,
  2 FROM WHERE;

SELECT * FROM no_such_table;

SELECT 1/0;

SELECT 1::numeric / 0;

SELECT 'abc'::int;

SELECT 2147483647 + 1;

SELECT 'x'::int8range;

CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int NOT NULL CHECK (n > 0));

INSERT INTO u VALUES (1, 'a@example.com', 1);

INSERT INTO u VALUES (1, 'b@example.com', 1);

INSERT INTO u VALUES (2, 'a@example.com', 1);

INSERT INTO u VALUES (3, 'c@example.com', NULL);

INSERT INTO u VALUES (3, 'c@example.com', 0);

CREATE TABLE child (u_id int REFERENCES u (id));

INSERT INTO child VALUES (99);

INSERT INTO child VALUES (1);

DELETE FROM u WHERE id = 1;

SELECT nonexistent_column FROM u;

SELECT emial FROM u;

SELECT no_such_function(1);

SELECT length(1, 2, 3);

SELECT * FROM u WHERE id = 'not a number';

CREATE TABLE u (x int);

-- Rows first, then the error: the client sees both.
SELECT g, 10 / (3 - g) AS q FROM generate_series(1, 5) g;

DO $$
BEGIN
  RAISE EXCEPTION 'custom failure %', 7
    USING ERRCODE = 'P0001', DETAIL = 'the detail', HINT = 'the hint';
END
$$;

DO $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '22012', MESSAGE = 'division by zero, by hand',
    COLUMN = 'col', CONSTRAINT = 'con', DATATYPE = 'int', TABLE = 'tab', SCHEMA = 'sch';
END
$$;

CREATE FUNCTION fails(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RETURN 100 / i;
END
$$;

SELECT fails(0);

SELECT fails(g) FROM generate_series(2, -2, -1) g;

SELECT 1 FROM u FOR UPDATE OF nope;

VALUES (1), ('x');

ALTER TABLE u ADD CONSTRAINT bad CHECK (n > 5);

SELECT * FROM u ORDER BY id;
