-- The Cooly schema of contract §4 for SQLite. Ids are hyphenated UUID text,
-- timestamps RFC 3339 text (sortable as text), JSON as text.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT,
    credits       INTEGER NOT NULL DEFAULT 0,
    provider      TEXT DEFAULT 'local',
    last_login_at TEXT,
    role          TEXT DEFAULT 'user',
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    deleted_at    TEXT
);
CREATE UNIQUE INDEX users_email_lower ON users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE credit_lots (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    source     TEXT NOT NULL CHECK (source IN ('subscription', 'one_off', 'adjustment')),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    remaining  INTEGER NOT NULL CHECK (remaining >= 0),
    expires_at TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    closed_at  TEXT
);
CREATE INDEX credit_lots_user_expiry ON credit_lots (user_id, expires_at);

CREATE TABLE credit_reservations (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id),
    amount      INTEGER NOT NULL CHECK (amount > 0),
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'captured', 'released', 'expired')),
    session_id  TEXT,
    description TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    expires_at  TEXT NOT NULL,
    captured_at TEXT,
    released_at TEXT
);
-- Keeps "available = credits - live reservations" cheap to sum.
CREATE INDEX credit_reservations_live ON credit_reservations (user_id, expires_at) WHERE status = 'reserved';

CREATE TABLE credit_transactions (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id),
    description    TEXT,
    amount         INTEGER NOT NULL,
    balance_after  INTEGER NOT NULL,
    reservation_id TEXT,
    lot_id         TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);
CREATE INDEX credit_transactions_reservation ON credit_transactions (reservation_id);
CREATE INDEX credit_transactions_user ON credit_transactions (user_id);

CREATE TABLE generation_sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES users (id),
    prompt         TEXT NOT NULL,
    model          TEXT,
    status         TEXT NOT NULL,
    outputs        INTEGER NOT NULL DEFAULT 1,
    credit_cost    INTEGER NOT NULL DEFAULT 0,
    reservation_id TEXT,
    client_key     TEXT,
    error_details  TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    completed_at   TEXT,
    duration_ms    INTEGER,
    resolution     TEXT,
    aspect_ratio   TEXT,
    guidance_scale REAL,
    seed           INTEGER
);
-- clientKey idempotency is enforced here, not by a read-then-write.
CREATE UNIQUE INDEX generation_sessions_client_key ON generation_sessions (user_id, client_key);
CREATE INDEX generation_sessions_user_created ON generation_sessions (user_id, created_at);
CREATE INDEX generation_sessions_status ON generation_sessions (status);

CREATE TABLE images (
    id               TEXT PRIMARY KEY NOT NULL,
    session_id       TEXT NOT NULL REFERENCES generation_sessions (id) ON DELETE CASCADE,
    url              TEXT,
    width            INTEGER,
    height           INTEGER,
    storage_provider TEXT,
    generation_tool  TEXT,
    client_key       TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    completed_at     TEXT
);
CREATE INDEX images_session ON images (session_id);

CREATE TABLE outbox (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type        TEXT NOT NULL,
    reservation_id    TEXT,
    payload           TEXT NOT NULL,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    dispatched_at     TEXT,
    dispatch_attempts INTEGER NOT NULL DEFAULT 0
);
-- Job id = reservation id: a reservation can never be queued twice.
CREATE UNIQUE INDEX outbox_reservation ON outbox (reservation_id);
CREATE INDEX outbox_undispatched ON outbox (id) WHERE dispatched_at IS NULL;
