-- PostgreSQL's 0003 makes login_failures UNLOGGED. SQLite has no such tables (and, in WAL
-- mode with synchronous=NORMAL, commits do not wait for a flush anyway): nothing to do, so
-- that both databases keep the same migration numbers.
SELECT 1;
