-- The gateway answers its own statements (CREATE DYNAMIC TABLE, ...) and finds them by looking
-- for the word DYNAMIC in every simple Query. These statements contain the word, some even the
-- whole phrase, but none of them is the gateway's: each must reach PostgreSQL untouched, whatever
-- PostgreSQL makes of it.

CREATE TABLE dynamic_things (dynamic text, "DYNAMIC TABLE" int);

INSERT INTO dynamic_things VALUES ('dynamic', 1), ('CREATE DYNAMIC TABLE x', 2);

SELECT dynamic, "DYNAMIC TABLE" FROM dynamic_things ORDER BY 2;

SELECT 'DROP DYNAMIC TABLE x' AS text_only /* REFRESH DYNAMIC TABLE y */;

SHOW dynamic_shared_memory_type;

CREATE TABLE dynamic (x int);

DROP TABLE dynamic;

-- Statement separators inside literals, identifiers and comments.
SELECT 'a; CREATE DYNAMIC TABLE x AS SELECT 1' AS s;

SELECT 'it''s; CREATE DYNAMIC TABLE x' AS doubled_quote;

SELECT E'escaped \'; CREATE DYNAMIC TABLE x' AS escape_string;

SELECT $tag$; CREATE DYNAMIC TABLE x $tag$ AS dollar_quoted;

SELECT $$ $not_a_tag; DROP DYNAMIC TABLE x $$ AS dollar_inside;

SELECT 1 AS "col; CREATE DYNAMIC TABLE x";

SELECT 1 AS one /* ; CREATE DYNAMIC TABLE x */;

SELECT 1 AS nested /* outer /* inner ; */ ; DROP DYNAMIC TABLE x */;

SELECT 1 AS line_comment -- ; CREATE DYNAMIC TABLE x
;

DO $body$
BEGIN
  RAISE NOTICE 'not a statement: %', 'CREATE DYNAMIC TABLE x; REFRESH DYNAMIC TABLE y';
END
$body$;

-- Not statements of the gateway either: PostgreSQL's own syntax errors.
CREATE DYNAMICTABLE x AS SELECT 1;

CREATE TEMP DYNAMIC TABLE x AS SELECT 1;

-- With standard_conforming_strings off, a backslash escapes the quote in an ordinary literal:
-- this is one SELECT of one string, not a SELECT followed by CREATE DYNAMIC TABLE.
SET standard_conforming_strings = off;

SET escape_string_warning = off;

SELECT 'a\'; CREATE DYNAMIC TABLE x AS SELECT 1; SELECT \'b' AS one_string;

RESET escape_string_warning;

RESET standard_conforming_strings;
