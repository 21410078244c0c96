-- Months of messages moved to the archive store (see relay/src/archive).
CREATE TABLE archived_months (
    month       TEXT PRIMARY KEY,
    object      TEXT    NOT NULL,
    messages    INTEGER NOT NULL,
    archived_at INTEGER NOT NULL
);
