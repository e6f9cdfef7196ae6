//! Per-key request rate limits (GCRA, `governor`): each API key gets its own budget,
//! refilled at `--rate-limit` requests per second with bursts up to
//! `--rate-limit-burst`; over it, 429 with `Retry-After`. Worker keys have their own
//! setting (`--worker-rate-limit`, off by default: one key is usually shared by a
//! whole farm, whose nodes node tokens tell apart), and the worker long-polls
//! (`/jobs/next`, `/nodes/{id}/control`) are never limited. An open API (no keys)
//! has no key to count against.

use super::auth::Role;
use crate::domain::credentials::Digest;
use crate::error::AppError;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;

type Limiter = RateLimiter<Digest, HashMapStateStore<Digest>, DefaultClock>;

/// Routes never limited: parked long-polls, which by design come back at once.
pub const EXEMPT_ROUTES: &[&str] = &["/jobs/next", "/nodes/{id}/control", "/health"];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second per admin or read-only key; 0 = unlimited.
    pub per_key: u32,
    pub burst: u32,
    /// Requests per second per worker key; 0 = unlimited.
    pub per_worker_key: u32,
}

pub struct RateLimits {
    users: Option<Limiter>,
    workers: Option<Limiter>,
    clock: DefaultClock,
}

fn limiter(per_second: u32, burst: u32) -> Option<Limiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst)))
}

impl RateLimits {
    pub fn new(c: RateLimitConfig) -> Self {
        RateLimits {
            users: limiter(c.per_key, c.burst),
            workers: limiter(c.per_worker_key, c.burst.max(c.per_worker_key)),
            clock: DefaultClock::default(),
        }
    }

    /// Count one request of `key` (with `role`) on `route`; Err(429) when over budget.
    pub fn check(&self, key: Option<&Digest>, role: Option<Role>, route: &str) -> Result<(), AppError> {
        let Some(key) = key else { return Ok(()) };
        if EXEMPT_ROUTES.contains(&route) {
            return Ok(());
        }
        let limiter = match role {
            Some(Role::Worker) => &self.workers,
            _ => &self.users,
        };
        let Some(l) = limiter else { return Ok(()) };
        l.check_key(key).map_err(|until| {
            let wait = until.wait_time_from(self.clock.now());
            AppError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_key_with_exemptions() {
        let r = RateLimits::new(RateLimitConfig { per_key: 2, burst: 3, per_worker_key: 0 });
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let admin = Some(Role::Admin);
        for _ in 0..3 {
            assert!(r.check(Some(&a), admin, "/jobs").is_ok());
        }
        let e = r.check(Some(&a), admin, "/jobs").unwrap_err();
        assert_eq!((e.status(), e.code()), (429, "rate_limited"));
        assert!(r.check(Some(&b), admin, "/jobs").is_ok(), "another key has its own budget");
        assert!(r.check(Some(&a), admin, "/jobs/next").is_ok(), "long-polls are exempt");
        for _ in 0..100 {
            assert!(r.check(Some(&a), Some(Role::Worker), "/results").is_ok(), "worker keys unlimited by default");
        }
        assert!(r.check(None, None, "/jobs").is_ok(), "an open API has no key to count");
    }
}
