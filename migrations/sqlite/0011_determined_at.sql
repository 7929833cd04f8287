-- The day the company determined that a breach occurred: see the PostgreSQL migration of the same
-- number. YYYY-MM-DD, as discovered_at.
ALTER TABLE campaigns ADD COLUMN determined_at TEXT;
