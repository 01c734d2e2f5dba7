-- Empty queries, and simple Query strings holding several statements (in the extended protocol
-- these are rejected by Parse, identically both ways).

;

;;;

/* only a block comment */

--! verbatim
-- only a line comment

SELECT 1 AS one; SELECT 'two' AS two, 2.0 AS num;

CREATE TABLE m (x int);

INSERT INTO m VALUES (1), (2); UPDATE m SET x = x * 10; SELECT * FROM m ORDER BY x;

SELECT 1; ; SELECT 2;

-- An error in the middle of a multi-statement string: the earlier results were sent, the implicit
-- transaction (with its INSERT) is rolled back, the rest is not run.
--! simple-only
INSERT INTO m VALUES (3); SELECT count(*) FROM m; SELECT 1/0; INSERT INTO m VALUES (4);

SELECT count(*) AS after_rollback FROM m;

-- Explicit transaction control inside one string.
--! simple-only
BEGIN; INSERT INTO m VALUES (5); COMMIT; SELECT count(*) FROM m;

--! simple-only
BEGIN; INSERT INTO m VALUES (6);

SELECT count(*) FROM m;

ROLLBACK;

--! simple-only
SELECT 1; BEGIN; SELECT 2

ROLLBACK;

SELECT 'semicolon in a literal; not a separator' AS s, $$dollar; quoted$$ AS d;

SELECT 1 AS a
UNION ALL
SELECT 2
ORDER BY a DESC;

--! simple-only
SET TimeZone = 'UTC'; SHOW TimeZone; RESET TimeZone;
