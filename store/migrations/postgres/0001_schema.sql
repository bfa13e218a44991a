-- The Cooly schema of contract §4 for PostgreSQL, with the real backend's
-- column names and types.
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text,
    credits       integer NOT NULL DEFAULT 0,
    provider      text DEFAULT 'local',
    last_login_at timestamptz,
    role          text DEFAULT 'user',
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX users_email_lower ON users (lower(email)) WHERE deleted_at IS NULL;

CREATE TABLE credit_lots (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id),
    source     text NOT NULL CHECK (source IN ('subscription', 'one_off', 'adjustment')),
    amount     integer NOT NULL CHECK (amount >= 0),
    remaining  integer NOT NULL CHECK (remaining >= 0),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz
);
CREATE INDEX credit_lots_user_expiry ON credit_lots (user_id, expires_at);

CREATE TABLE credit_reservations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id),
    amount      integer NOT NULL CHECK (amount > 0),
    status      text NOT NULL CHECK (status IN ('reserved', 'captured', 'released', 'expired')),
    session_id  uuid,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    captured_at timestamptz,
    released_at timestamptz
);
-- Keeps "available = credits - live reservations" cheap to sum.
CREATE INDEX credit_reservations_live ON credit_reservations (user_id, expires_at) WHERE status = 'reserved';

CREATE TABLE credit_transactions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id),
    description    text,
    amount         integer NOT NULL,
    balance_after  integer NOT NULL,
    reservation_id uuid,
    lot_id         uuid,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_transactions_reservation ON credit_transactions (reservation_id);
CREATE INDEX credit_transactions_user ON credit_transactions (user_id);

CREATE TABLE generation_sessions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id),
    prompt         text NOT NULL,
    model          text,
    status         text NOT NULL,
    outputs        integer NOT NULL DEFAULT 1,
    credit_cost    integer NOT NULL DEFAULT 0,
    reservation_id uuid,
    client_key     text,
    error_details  jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    duration_ms    integer,
    resolution     text,
    aspect_ratio   text,
    guidance_scale double precision,
    seed           bigint
);
-- clientKey idempotency is enforced here, not by a read-then-write.
CREATE UNIQUE INDEX generation_sessions_client_key ON generation_sessions (user_id, client_key);
CREATE INDEX generation_sessions_user_created ON generation_sessions (user_id, created_at);
CREATE INDEX generation_sessions_status ON generation_sessions (status);

CREATE TABLE images (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id       uuid NOT NULL REFERENCES generation_sessions (id) ON DELETE CASCADE,
    url              text,
    width            integer,
    height           integer,
    storage_provider text,
    generation_tool  text,
    client_key       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX images_session ON images (session_id);

CREATE TABLE outbox (
    id                bigserial PRIMARY KEY,
    event_type        text NOT NULL,
    reservation_id    uuid,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    dispatched_at     timestamptz,
    dispatch_attempts integer NOT NULL DEFAULT 0
);
-- Job id = reservation id: a reservation can never be queued twice.
CREATE UNIQUE INDEX outbox_reservation ON outbox (reservation_id);
CREATE INDEX outbox_undispatched ON outbox (id) WHERE dispatched_at IS NULL;
