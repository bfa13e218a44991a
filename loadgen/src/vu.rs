//! One virtual user: its own connection and cookie jar, its RNG (derived
//! from `--seed` and the VU's number in the whole test, so prompts and
//! think times are reproducible, and the same in a split test), its
//! account and, with `--login once`, its token (as its `Cookie` header), and
//! the source address of its connection (`--local-addr`). It
//! lives on one of the [`crate::workers`] runtimes for the whole run.

use std::net::IpAddr;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::runtime::Handle;

use crate::http::{BaseUrl, Client};

pub struct Vu {
    pub id: u64,
    pub runtime: Handle,
    pub client: Client,
    pub rng: SmallRng,
    pub email: String,
    pub password: String,
    /// The `Cookie` header of its token (`token=…`) once logged in.
    pub cookie: Option<String>,
}

impl Vu {
    /// VU `id` (1-based, its number in the whole test: with an execution
    /// segment, the global VU it is) logging in as `account`.
    pub fn new(
        id: u64,
        runtime: Handle,
        base: &Arc<BaseUrl>,
        (email, password): (String, String),
        seed: Option<u64>,
        local_addr: Option<IpAddr>,
        debug: bool,
    ) -> Vu {
        let rng = match seed {
            // SplitMix-style spreading so neighbouring VUs get unrelated streams.
            Some(seed) => SmallRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => SmallRng::from_entropy(),
        };
        Vu {
            id,
            runtime,
            client: Client::new(base.clone(), debug).with_local_addr(local_addr),
            rng,
            email,
            password,
            cookie: None,
        }
    }
}
