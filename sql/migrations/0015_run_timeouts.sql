-- A project's default time limit of its runs (issue 19): seconds from a run's start, across
-- its attempts; NULL is the built-in default (1 h). A run's own limit, else its agent's, else
-- this one is recorded in its RunQueued event.
ALTER TABLE projects ADD COLUMN default_timeout_seconds integer
    CHECK (default_timeout_seconds BETWEEN 1 AND 604800);
