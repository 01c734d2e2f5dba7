-- COPY TO STDOUT: CopyOutResponse, CopyData, CopyDone and the COPY n tag, in every format.

CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8, 2), tags text[], note text);

INSERT INTO items VALUES
  (1, 'plain', 1.50, '{a,b}', NULL),
  (2, 'with, comma', 2.00, '{}', 'tab	inside'),
  (3, 'quote "here"', NULL, '{"x y"}', E'new\nline'),
  (4, 'ünïcödé 🎉', 0.01, NULL, E'back\\slash');

COPY items TO STDOUT;

COPY items TO STDOUT (FORMAT csv, HEADER);

COPY items (id, note) TO STDOUT (DELIMITER '|', NULL 'NULL');

COPY items TO STDOUT (FORMAT binary);

COPY (SELECT id, name FROM items WHERE id > 1 ORDER BY id DESC) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *);

COPY (SELECT g, g * 2 FROM generate_series(1, 1000) g) TO STDOUT;

COPY (SELECT 1 WHERE false) TO STDOUT;

COPY items TO STDOUT (FORMAT csv, QUOTE '''', ESCAPE '\', ENCODING 'UTF8');

COPY no_such_table TO STDOUT;

-- Fails after CopyOutResponse and some CopyData.
COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT;

COPY items TO STDOUT (FORMAT nope);

BEGIN;

COPY items TO STDOUT (FORMAT csv);

COMMIT;

