//! The HTTP surface: one router per area of the contract over a shared
//! [`AppState`]; handlers are thin and leave credits to the ledger.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use store::db::Db;
use store::group_commit::GroupCommit;
use tokio::sync::Notify;

use crate::provider::Provider;
use crate::queue::Queue;

pub mod account;
pub mod admin;
pub mod auth;
pub mod body;
pub mod control;
pub mod edge;
pub mod error;
pub mod extract;
pub mod generation;
pub mod health;
pub mod login_cache;
pub mod observe;
pub mod openapi;
pub mod rate_limit;

pub use error::ApiError;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub queue: Arc<dyn Queue>,
    pub tokens: Arc<auth::Tokens>,
    pub provider: Arc<Provider>,
    pub settings: Arc<Settings>,
    /// Woken after each accepted generation so the relay dispatches it now
    /// rather than at its next poll.
    pub relay_wake: Arc<Notify>,
    pub admin: Option<Arc<admin::AdminAccount>>,
    /// Fault injection: the plan, the epoch, the counters.
    pub faults: Arc<crate::faults::Faults>,
    /// Passwords bcrypt already verified, as keyed digests.
    pub login_cache: Arc<login_cache::LoginCache>,
    /// The generate path's reservations, batched into shared transactions.
    pub group_commit: Arc<GroupCommit>,
}

/// The request-handling part of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub credit_cost_per_output: i32,
    pub max_outputs: i32,
    pub reservation_ttl: Duration,
    pub enqueue_first: bool,
    pub bcrypt_cost: u32,
    /// Serve repeated logins with a verified password from the login cache.
    pub login_cache: bool,
    /// Answer generate 202 (the outbox keeps the job) even while the queue
    /// is known down, instead of the contract's 503.
    pub accept_while_queue_down: bool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(account::router())
        .merge(generation::router())
        .merge(admin::router())
        .merge(health::router())
        .merge(observe::router())
        .merge(openapi::router())
        .merge(control::router())
        .fallback(not_found)
        // Express answers an unknown method on a known path with its 404.
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(body::BODY_LIMIT))
        // Inside the counting layer, so injected answers are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.faults.clone(),
            edge::layer,
        ))
        .layer(axum::middleware::from_fn(observe::count_requests))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found")
}
