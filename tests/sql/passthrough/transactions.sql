-- Transactions: the ReadyForQuery status (I, T, E) after every statement, savepoints, and the
-- warnings PostgreSQL sends for misplaced transaction commands.

CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL);

INSERT INTO acct VALUES (1, 100), (2, 50);

BEGIN;

UPDATE acct SET balance = balance - 30 WHERE id = 1;

UPDATE acct SET balance = balance + 30 WHERE id = 2;

COMMIT;

SELECT * FROM acct ORDER BY id;

BEGIN;

DELETE FROM acct;

SELECT count(*) FROM acct;

ROLLBACK;

SELECT count(*) FROM acct;

-- A failed transaction: status E until ROLLBACK; COMMIT of a failed transaction reports ROLLBACK.
BEGIN;

INSERT INTO acct VALUES (1, 0);

SELECT 1;

COMMIT;

BEGIN;

SELECT 1/0;

ROLLBACK;

BEGIN;

INSERT INTO acct VALUES (3, 10);

SAVEPOINT sp1;

INSERT INTO acct VALUES (4, 20);

SAVEPOINT sp2;

INSERT INTO acct VALUES (1, 0);

SELECT 'ignored';

ROLLBACK TO SAVEPOINT sp2;

SELECT id FROM acct ORDER BY id;

RELEASE SAVEPOINT sp1;

ROLLBACK TO SAVEPOINT sp1;

ROLLBACK;

COMMIT;

ROLLBACK;

SAVEPOINT outside;

BEGIN;

BEGIN;

SELECT count(*) FROM acct;

END;

BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY;

SHOW transaction_isolation;

SHOW transaction_read_only;

INSERT INTO acct VALUES (9, 9);

ABORT;

START TRANSACTION;

SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;

SELECT current_setting('transaction_isolation');

SET LOCAL work_mem = '1MB';

SHOW work_mem;

COMMIT;

SHOW work_mem;

BEGIN;

SET TRANSACTION ISOLATION LEVEL READ COMMITTED;

SELECT 1;

SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;

ROLLBACK;

PREPARE TRANSACTION 'not enabled';

COMMIT PREPARED 'nothing';

BEGIN;

LOCK TABLE acct IN ACCESS EXCLUSIVE MODE;

COMMIT AND CHAIN;

SHOW transaction_isolation;

ROLLBACK;

VACUUM acct;

BEGIN;

VACUUM acct;

ROLLBACK;
