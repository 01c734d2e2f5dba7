-- Numeric types: limits, special values and output settings. Binary results compare the exact
-- send formats.

SELECT 1::int2 AS a, (-32768)::int2 AS b, 32767::int2 AS c, 0::int2 AS d;

SELECT 2147483647::int4 AS max4, (-2147483648)::int4 AS min4, 42 AS plain;

SELECT 9223372036854775807::int8 AS max8, (-9223372036854775808)::int8 AS min8;

SELECT 12345678901234567890123456789.123456789::numeric AS big,
       0.1::numeric + 0.2::numeric AS exact,
       1::numeric / 3 AS third,
       (-0.000001)::numeric AS small;

SELECT 1.23456::numeric(10, 3) AS rounded, 'NaN'::numeric AS nan,
       'Infinity'::numeric AS inf, '-Infinity'::numeric AS ninf;

SELECT 2::numeric ^ 200 AS power, factorial(40) AS fact, round(2.5) AS r, trunc(-2.5) AS t;

SELECT 1e-300::numeric AS tiny, 1e300::numeric AS huge;

SELECT 0.1::float8 AS f8, 0.1::float4 AS f4, 1.0 / 3.0 AS q, sqrt(2::float8) AS sqrt2;

SELECT 'NaN'::float8 AS nan, 'Infinity'::float8 AS inf, '-Infinity'::float8 AS ninf,
       '-0'::float8 AS negzero, 1e-308::float8 AS tiny, 1.7976931348623157e308::float8 AS max;

SELECT 'NaN'::float4 AS nan, 'Infinity'::float4 AS inf, 1.17549435e-38::float4 AS min4,
       3.4028235e38::float4 AS max4, 1::float4 / 3 AS third;

SET extra_float_digits = 0;

SELECT 0.1::float8, 1::float4 / 3, pi();

SET extra_float_digits = 3;

SELECT 0.1::float8, 1::float4 / 3, pi();

RESET extra_float_digits;

SELECT 2.5::float8::int4 AS round_half_even, 3.5::float8::int4 AS up, (-2.5)::float8::int8 AS neg;

SELECT true AS t, false AS f, NULL::bool AS n, 'yes'::bool AS yes, 'off'::bool AS off;

SELECT 12.34::money AS m, (-1)::numeric::money AS neg;

SELECT g AS n, g::int2 AS small, g * 1000000000::int8 AS big, g / 7.0 AS frac
FROM generate_series(-3, 3) g ORDER BY g;

SELECT sum(g), avg(g), stddev(g), min(g), max(g), count(*) FROM generate_series(1, 1000) g;

SELECT 10 % 3 AS mod, -7 / 2 AS intdiv, 7 & 3 AS band, 1 << 10 AS shl, @ -5 AS abs, |/ 16 AS root;
