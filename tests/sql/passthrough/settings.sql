-- SET / SHOW / RESET, and the ParameterStatus messages that settings reported to clients send.

SHOW search_path;

SET search_path = pg_catalog, public;

SHOW search_path;

SET work_mem = '8MB';

SHOW work_mem;

SELECT set_config('work_mem', '16MB', false) AS set_config, current_setting('work_mem') AS current;

RESET work_mem;

SHOW work_mem;

SET application_name = 'passthrough ünï';

SHOW application_name;

SET DateStyle = 'SQL, DMY';

SHOW DateStyle;

SET IntervalStyle = 'iso_8601';

SET TimeZone = 'Pacific/Chatham';

SHOW TimeZone;

SET TIME ZONE INTERVAL '+05:45' HOUR TO MINUTE;

SHOW TimeZone;

SET TIME ZONE LOCAL;

SET statement_timeout = '5s';

SHOW statement_timeout;

SET lock_timeout TO DEFAULT;

SET no_such_setting = 1;

SET work_mem = 'lots';

SET work_mem = -1;

SHOW no_such_setting;

SET myapp.custom = 'custom value';

SHOW myapp.custom;

SELECT current_setting('myapp.missing', true) IS NULL AS missing_ok;

RESET ALL;

SHOW application_name;

SHOW DateStyle;

SHOW server_version_num;

SHOW server_encoding;

SHOW client_encoding;

SHOW integer_datetimes;

SHOW ALL;

SELECT name, setting, unit, context FROM pg_settings
WHERE name IN ('work_mem', 'DateStyle', 'TimeZone', 'search_path') ORDER BY name;

SET client_encoding = 'LATIN1';

SELECT 'grüße' AS latin1_on_the_wire;

SELECT '日本' AS not_representable;

RESET client_encoding;

SELECT 'grüße' AS utf8_again;

SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ;

SHOW default_transaction_isolation;

SET ROLE NONE;

DISCARD ALL;

SHOW search_path;
