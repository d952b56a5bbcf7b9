-- Room on each chat_sessions page for the updates every chat turn makes to its session (the
-- turn lease taken, then the answer's touch): with free space on the page, an update that
-- changes no indexed column (the lease) is a HOT update, which adds no index entries and
-- leaves no dead ones for later lookups to step over. Applies to pages written from now on.
-- Written for both PostgreSQL 15 and PGlite (PostgreSQL 17).

ALTER TABLE chat_sessions SET (fillfactor = 70);
