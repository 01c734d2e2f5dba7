-- uuid, JSON, arrays, composites, enums, ranges, network, geometric and other built-in types,
-- and NULLs everywhere. User-defined types (enum, composite) get a new OID in every database, so
-- their values are cast to text or taken apart: a RowDescription (or binary array) naming them
-- would legitimately differ between the two databases.

SELECT 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, md5('x')::uuid AS from_md5,
       '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'::uuid[] AS uarr;

SELECT '{"b": 1, "a": [1, 2.50, null, "x"], "c": {"d": true}}'::json AS j,
       '{"b": 1, "a": [1, 2.50, null, "x"], "c": {"d": true}}'::jsonb AS jb;

SELECT '{"k": "ünï 🎉", "n": 1e3}'::jsonb -> 'k' AS k, '{"a": {"b": [10, 20]}}'::jsonb #>> '{a,b,1}' AS path,
       jsonb_build_object('x', 1, 'y', ARRAY[1, 2]) AS built, '[]'::jsonb AS empty, 'null'::jsonb AS jnull;

SELECT jsonb_pretty('{"a": [1, {"b": 2}]}') AS pretty, to_jsonb(ROW(1, 'x')) AS rowjson,
       jsonb_path_query_array('{"a": [1, 2, 3, 4]}', '$.a[*] ? (@ > 2)') AS jpath;

SELECT key, value FROM jsonb_each('{"z": 1, "a": "two", "m": null}') ORDER BY key;

SELECT ARRAY[1, 2, NULL, 4] AS ints, '{{1,2},{3,4}}'::int[] AS matrix, '[0:2]={7,8,9}'::int[] AS lower_bound,
       '{}'::text[] AS empty, ARRAY[]::int8[] AS empty8;

SELECT ARRAY['a b', 'c"d', NULL, 'NULL', '', E'back\\slash', 'ü,{}'] AS tricky_text;

SELECT ARRAY[1.5, 2.25]::numeric[] AS nums, ARRAY['2024-01-01'::date] AS dates,
       ARRAY[true, false, NULL] AS bools, ARRAY['{"a":1}'::jsonb] AS jsons, ARRAY['\x00ff'::bytea] AS bytes;

SELECT array_length('{{1,2,3},{4,5,6}}'::int[], 2) AS len, array_dims('[2:3]={1,2}'::int[]) AS dims,
       unnest(ARRAY['x', 'y']) AS elem;

SELECT ROW(1, 'a', NULL, 2.5) AS rec, ROW(ROW(1, 2), ARRAY[3]) AS nested, ARRAY[ROW(1, 'x'), ROW(2, 'y')] AS recs;

CREATE TYPE pair AS (a int, b text);

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE things (id int PRIMARY KEY, p pair, m mood, tags text[], r int4range);

INSERT INTO things VALUES
  (1, ROW(1, 'one'), 'happy', '{x,y}', '[1,5)'),
  (2, ROW(NULL, 'two, "quoted"'), 'sad', '{}', 'empty'),
  (3, NULL, NULL, NULL, NULL),
  (4, ROW(4, NULL), 'ok', '{NULL}', '(,10]');

SELECT id, p::text AS p, (p).a AS pa, (p).b AS pb, m::text AS m, tags, r FROM things ORDER BY id;

SELECT m::text AS mood, count(*) FROM things WHERE m IS NOT NULL GROUP BY m ORDER BY m;

SELECT enum_range(NULL::mood)::text[] AS all_moods, 'happy'::mood > 'sad'::mood AS happier;

SELECT t::text AS whole_row FROM things t ORDER BY id;

SELECT int4range(1, 10) AS i4, '[1,10]'::int8range AS i8, numrange(1.5, 2.5, '[]') AS num,
       'empty'::int4range AS empty, '[,)'::int4range AS unbounded;

SELECT tsrange('2024-01-01', '2024-02-01') AS ts, daterange('2024-01-01', 'infinity') AS dr,
       int4range(1, 10) * int4range(5, 20) AS intersection, int4range(1, 5) @> 3 AS contains;

SELECT '{[1,3), [5,7)}'::int4multirange AS multi, '{}'::int4multirange AS empty_multi;

SET TimeZone = 'UTC';

SELECT tstzrange('2024-01-01 00:00+00', '2024-01-02 00:00+00') AS tstz;

SELECT '192.168.0.1/24'::inet AS inet, '10.0.0.0/8'::cidr AS cidr, '::1'::inet AS v6,
       '08:00:2b:01:02:03'::macaddr AS mac, '08:00:2b:01:02:03:04:05'::macaddr8 AS mac8;

SELECT B'1010' AS bits, '101'::varbit AS varbits, B'1010' | B'0101' AS bor;

SELECT '(1,2)'::point AS pt, '((0,0),(1,1))'::box AS bx, '[(0,0),(1,1)]'::lseg AS ls,
       '<(0,0),2>'::circle AS circ, '((0,0),(1,0),(1,1))'::polygon AS poly, '[(0,0),(3,4)]'::path AS pth;

SELECT 'a fat cat sat on a mat'::tsvector AS tsv, to_tsvector('simple', 'The Fat Cats') AS simple,
       'fat & cat'::tsquery AS tsq;

SELECT '<a b="1">text</a>'::xml AS x, '0/16B6C50'::pg_lsn AS lsn, 'int4'::regtype AS regtype,
       'pg_catalog.pg_class'::regclass AS regclass;

SELECT NULL AS bare_null, NULL::int AS typed_null, NULL = NULL AS null_eq, coalesce(NULL, 'fallback') AS c,
       ARRAY[NULL]::int[] AS null_elem, ROW(NULL, NULL) AS null_row;

SELECT pg_sleep(0) AS void_result;
