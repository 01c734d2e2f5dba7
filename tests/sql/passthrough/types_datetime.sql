-- Date and time types under fixed time zones and output styles (set here, so the server's own
-- defaults do not matter). No now(), current_date or 'today': those differ between two runs.

SET TimeZone = 'UTC';

SELECT '2024-02-29'::date AS leap, '4713-01-01 BC'::date AS bc, 'infinity'::date AS inf,
       '-infinity'::date AS ninf, '2024-02-29'::date + 1 AS next_day;

SELECT '13:45:30.123456'::time AS t, '24:00:00'::time AS midnight, '12:00:00+05:30'::timetz AS tz;

SELECT '2024-03-10 01:59:59.999999'::timestamp AS ts, '2024-03-10 02:30:00'::timestamp(0) AS ts0,
       'epoch'::timestamp AS epoch, 'infinity'::timestamp AS inf;

SELECT '2024-06-01 12:00:00+00'::timestamptz AS utc, '2024-06-01 12:00:00-07'::timestamptz AS pdt,
       '2000-01-01 00:00:00 Europe/Berlin'::timestamptz AS named;

SET TimeZone = 'America/New_York';

SELECT '2024-06-01 12:00:00+00'::timestamptz AS summer, '2024-01-01 12:00:00+00'::timestamptz AS winter,
       '2024-03-10 02:30:00'::timestamptz AS dst_gap, '2024-11-03 01:30:00'::timestamptz AS dst_overlap;

SELECT '2024-03-09 12:00:00'::timestamptz + interval '1 day' AS plus_day,
       '2024-03-09 12:00:00'::timestamptz + interval '24 hours' AS plus_24h;

SET TimeZone = 'Asia/Kolkata';

SELECT '2024-06-01 12:00:00+00'::timestamptz AS ist, timezone('UTC', '2024-06-01 12:00:00+00'::timestamptz) AS as_utc;

SELECT '1 year 2 months 3 days 04:05:06.789'::interval AS i, '-1 day +2 hours'::interval AS mixed,
       interval '1 month' * 1.5 AS scaled, justify_interval('35 days 25 hours') AS justified;

SELECT date '2024-01-31' + interval '1 month' AS month_end, age('2024-03-01', '2023-12-15') AS age,
       '2024-12-31'::date - '2024-01-01'::date AS days_between;

SELECT extract(epoch FROM '2024-06-01 12:00:00+00'::timestamptz) AS epoch,
       extract(dow FROM '2024-06-01'::date) AS dow, date_part('week', '2024-06-01'::date) AS week,
       date_trunc('month', '2024-06-15 13:14:15'::timestamp) AS trunc;

SELECT to_char('2024-06-01 13:14:15.678'::timestamp, 'Day DD Mon YYYY HH24:MI:SS.MS') AS formatted,
       to_timestamp('05 Dec 2000 10:11', 'DD Mon YYYY HH24:MI') AS parsed;

SELECT make_date(2024, 2, 29) AS md, make_interval(days => 10, mins => 5) AS mi,
       make_timestamptz(2024, 6, 1, 12, 0, 0, 'UTC') AS mt;

SET DateStyle = 'German';

SELECT '2024-06-01 13:14:15'::timestamp AS german, '2024-06-01'::date AS d;

SET DateStyle = 'SQL, DMY';

SELECT '2024-06-01 13:14:15+02'::timestamptz AS sql_dmy, '01/06/2024'::date AS parsed_dmy;

SET DateStyle = 'Postgres, MDY';

SELECT '2024-06-01 13:14:15'::timestamp AS postgres_style, '1 day 2 hours'::interval AS i;

RESET DateStyle;

SET IntervalStyle = 'iso_8601';

SELECT '1 year 2 months 3 days 04:05:06'::interval AS iso, '-5 minutes'::interval AS neg;

SET IntervalStyle = 'sql_standard';

SELECT '1 year 2 months 3 days 04:05:06'::interval AS sqlstd;

SET IntervalStyle = 'postgres_verbose';

SELECT '1 year 2 months 3 days 04:05:06'::interval AS verbose, '-1.5 seconds'::interval AS frac;

RESET IntervalStyle;

SELECT g AS day, g::timestamptz AS at_midnight
FROM generate_series('2024-03-08'::date, '2024-03-12'::date, '1 day') g ORDER BY g;

SELECT '2024-02-30'::date;

SELECT '25:00:00'::time;
