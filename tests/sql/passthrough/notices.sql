-- Notices and warnings, including notices interleaved with rows.

DO $$
BEGIN
  RAISE NOTICE 'hello %', 42;
  RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint';
  RAISE INFO 'info level, ünïcödé';
  RAISE LOG 'log level: not sent to the client';
  RAISE DEBUG 'debug level: not sent to the client';
END
$$;

DROP TABLE IF EXISTS does_not_exist;

CREATE TABLE n (x int);

CREATE TABLE IF NOT EXISTS n (x int);

CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'row %', i;
  RETURN i * 2;
END
$$;

SELECT noisy(g) FROM generate_series(1, 5) g;

SET client_min_messages = warning;

SELECT noisy(1);

DO $$ BEGIN RAISE WARNING 'still shown'; END $$;

RESET client_min_messages;

SET standard_conforming_strings = off;

SELECT 'back\\slash' AS nonstandard;

SET escape_string_warning = off;

SELECT 'back\\slash' AS quiet;

RESET escape_string_warning;

RESET standard_conforming_strings;

CREATE TABLE n2 (id serial PRIMARY KEY);

ALTER TABLE n2 ADD CONSTRAINT very_long_constraint_name_that_is_longer_than_sixty_three_characters_in_total UNIQUE (id);

CREATE FUNCTION trig() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'trigger % on %', TG_OP, TG_TABLE_NAME;
  RETURN NEW;
END
$$;

CREATE TRIGGER n_notice BEFORE INSERT OR UPDATE ON n FOR EACH ROW EXECUTE FUNCTION trig();

INSERT INTO n VALUES (1), (2);

UPDATE n SET x = x + 1 RETURNING x;
