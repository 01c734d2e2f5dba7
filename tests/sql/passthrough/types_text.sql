-- Character and binary types: unicode, escapes, padding, bytea in both output formats.

SELECT 'plain' AS a, '' AS empty, NULL::text AS n;

SELECT 'héllo wörld ✓ 日本語 한국어 العربية 🎉👨‍👩‍👧' AS unicode,
       length('🎉👨‍👩‍👧') AS chars, octet_length('🎉') AS bytes;

SELECT 'e' || chr(769) AS combining, upper('straße') AS upper_sz, lower('ÀÉÎ') AS lower_acc;

SELECT E'tab\there' AS tab, E'new\nline' AS newline, E'back\\slash' AS backslash,
       'it''s' AS quote, '"double"' AS dq, E'\u00e9\U0001F600' AS escapes;

SELECT 'ab'::char(5) AS padded, length('ab'::char(5)) AS len, 'abc'::varchar(10) AS vc,
       'x'::"char" AS onechar, 'a_name'::name AS nm;

SELECT repeat('abc', 10000) AS long_text;

SELECT string_agg(chr(g), '' ORDER BY g) AS printable FROM generate_series(32, 126) g;

SELECT '\xdeadbeef'::bytea AS hex, ''::bytea AS empty_bytea, 'abc'::bytea AS from_text;

SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g), 'hex') AS all_bytes
FROM generate_series(0, 255) g;

SET bytea_output = 'escape';

SELECT '\xdeadbeef00415c'::bytea AS escaped, decode('aGVsbG8=', 'base64') AS b64;

RESET bytea_output;

SELECT convert_to('ünï', 'UTF8') AS utf8_bytes, encode('ünï'::bytea, 'base64') AS b64;

SELECT format('%s|%I|%L', 'x y', 'Mixed Case', E'o\'k') AS formatted,
       quote_ident('select') AS qi, md5('abc') AS md5;

SELECT regexp_replace('2024-01-02', '(\d+)-(\d+)-(\d+)', '\3.\2.\1') AS re,
       split_part('a,b,c', ',', 2) AS part, position('ö' in 'föö') AS pos;

SELECT 'abc' < 'abd' AS lt, 'a' COLLATE "C" < 'B' COLLATE "C" AS c_order;

SELECT v FROM (VALUES ('b'), ('A'), ('a'), ('B'), ('é'), ('_')) x(v) ORDER BY v COLLATE "C";

CREATE TABLE strs (s varchar(3));

INSERT INTO strs VALUES ('abcd');

INSERT INTO strs VALUES ('abc'), ('ü'), (NULL);

SELECT s, s IS NULL AS missing FROM strs ORDER BY s NULLS FIRST;
