-- The lockout's counters skip the write-ahead log: a grant (one per password check) commits
-- without waiting for a WAL flush. They survive a restart of Bouncer or a clean restart of
-- PostgreSQL; a PostgreSQL crash or a failover to a replica forgets them (failure counts and
-- live lockouts start again from zero), as Keycloak's brute-force counts live in a cache.
-- See docs/DECISIONS.md.
ALTER TABLE login_failures SET UNLOGGED;
