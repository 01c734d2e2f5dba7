-- Large results, to exercise buffering: 100k rows, one very large value, a long COPY, and many
-- notices.

SELECT g AS n, md5(g::text) AS hash, g * 1.5 AS scaled, g % 7 = 0 AS sevens,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'row ' || g END AS maybe
FROM generate_series(1, 100000) g;

SELECT repeat('0123456789abcdef', 1024 * 1024) AS sixteen_mb;

SELECT string_agg(g::text, ',') AS joined FROM generate_series(1, 200000) g;

CREATE TABLE big AS SELECT g AS id, repeat(chr(65 + g % 26), g % 200) AS pad FROM generate_series(1, 100000) g;

SELECT count(*), sum(length(pad)) FROM big;

COPY big TO STDOUT;

UPDATE big SET pad = upper(pad) WHERE id % 2 = 0;

DELETE FROM big WHERE id > 50000;

SELECT id, length(pad) FROM big ORDER BY id DESC LIMIT 5;

DO $$
BEGIN
  FOR i IN 1..2000 LOOP
    RAISE NOTICE 'notice number %', i;
  END LOOP;
END
$$;

SELECT g, repeat('x', 100000) AS wide FROM generate_series(1, 100) g;
