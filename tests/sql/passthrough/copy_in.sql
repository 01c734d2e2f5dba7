-- COPY FROM STDIN driven by the raw client: data sent in uneven CopyData chunks, then CopyDone or
-- CopyFail; errors in the data; and COPY inside a transaction.

CREATE TABLE dst (id int PRIMARY KEY, name text, amount numeric, at date);

--! copy-in
COPY dst FROM STDIN (FORMAT csv);
1,one,1.5,2024-01-01
2,"two, quoted",2.25,2024-02-29
3,,,
4,ünïcödé 🎉,-0.001,1999-12-31
\.

SELECT * FROM dst ORDER BY id;

--! copy-in
COPY dst (id, name) FROM STDIN (DELIMITER '|', NULL 'NULL');
10|ten
11|NULL
12|back\\slash
\.

--! copy-in
COPY dst (id, name) FROM STDIN (FORMAT csv, HEADER);
id,name
20,twenty
21,twenty-one
\.

SELECT id, name FROM dst WHERE id >= 10 ORDER BY id;

--! copy-in
COPY dst FROM STDIN (FORMAT csv);
30,ok,1,2024-01-01
31,bad amount,xyz,2024-01-01
32,never,1,2024-01-01
\.

--! copy-in
COPY dst FROM STDIN (FORMAT csv);
40,dup,1,2024-01-01
1,duplicate key,1,2024-01-01
\.

--! copy-in
COPY dst (id) FROM STDIN;
50
51
\fail the client gave up

--! copy-in
COPY dst (id) FROM STDIN;
\fail immediately

--! copy-in
COPY dst (id) FROM STDIN;
\.

--! copy-in
COPY nope FROM STDIN;
1
\.

SELECT count(*) FROM dst;

BEGIN;

--! copy-in
COPY dst (id, name) FROM STDIN (FORMAT csv);
60,in transaction
61,also
\.

SELECT count(*) FROM dst;

ROLLBACK;

SELECT count(*) FROM dst;

BEGIN;

--! copy-in
COPY dst (id) FROM STDIN;
70
\fail abort inside a transaction

SELECT 1;

ROLLBACK;

--! copy-in
COPY dst (id, name) FROM STDIN (FORMAT csv);
80,"multi
line value"
81,"ends with ""quotes"""
\.

SELECT id, name FROM dst WHERE id >= 80 ORDER BY id;
