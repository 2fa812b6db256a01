//! Admission control: how much work one model takes at once. A bounded number of requests
//! run on its slots; a bounded queue waits in front of them; past both, a request is refused
//! at once, so load beyond what the model can serve is shed (503 with `Retry-After`) instead
//! of making every answer late and holding memory for every waiting body.
//!
//! A request takes one place, and one more for every [`PLACE_BYTES`] of its body: decoding,
//! running and encoding a request grow with its body, and a large one run beside many others
//! makes every connection's reads wait behind their decoding. So a model runs dozens of small
//! requests at once (a deep pipeline, for throughput) and only a few large ones.
//!
//! The queue absorbs bursts, not standing load. As CoDel tells a good queue from a bad one
//! in a router: when every request that waited has waited longer than `max_wait_ms` for a
//! whole interval ([`STANDING`]), the queue is standing, the model is past what it serves,
//! and the queue is cut to a quarter of `max_queued` until an interval passes without a
//! request refused. The model keeps its workers busy, and the answers it admits
//! stay about as fast as below saturation, instead of each waiting behind a full queue. The
//! wait measured is the real one, so closed-loop clients that keep a long queue of quick
//! requests are never refused for it.
//!
//! A request that finds a place free takes it with one atomic operation and no timer; only
//! a request that must wait arms its deadline and reads the clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;
use teal_core::config::LimitsConfig;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One model's bounds, shared by every route snapshot of the model (a switch keeps them).
pub struct Admission {
    limits: LimitsConfig,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    /// When the requests that waited began to wait longer than `max_wait_ms`, in
    /// nanoseconds after `epoch` (0: the last one did not).
    waits_long_since: AtomicU64,
    /// The queue is standing: cut to a quarter until an interval passes without a refusal.
    standing: AtomicBool,
    /// When a request was last refused for a full queue (or the queue began to stand), in
    /// nanoseconds after `epoch`.
    last_refused: AtomicU64,
    epoch: std::time::Instant,
}

/// The body bytes a place stands for: a request takes one place, and one more for each
/// of these in its body (at most all of them).
pub const PLACE_BYTES: usize = 12 * 1024;

/// How long every request that waits must wait past `max_wait_ms` before the queue is taken
/// as standing (CoDel's interval).
pub const STANDING: Duration = Duration::from_millis(100);

/// A place among the requests running on a model, given back when dropped. It is taken once
/// the request's body is read, before it is decoded, and held across a failover; a model
/// that is full is told apart from the head already ([`Admission::is_full`]), so refusing a
/// request costs reading its head.
pub type Place = OwnedSemaphorePermit;

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every place is taken and the queue is full.
    Full,
    /// It waited in the queue until its deadline.
    Waited,
}

impl Admission {
    pub fn new(limits: &LimitsConfig) -> Admission {
        Admission {
            limits: limits.clone(),
            running: Arc::new(Semaphore::new(limits.running())),
            queued: AtomicUsize::new(0),
            waits_long_since: AtomicU64::new(0),
            standing: AtomicBool::new(false),
            last_refused: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// The places a request with a body of `body_len` bytes takes: at most a quarter of
    /// them (at least one), so that four requests run at once however large they are.
    fn places_for(&self, body_len: usize) -> u32 {
        let most = (self.limits.running() / 4).max(1);
        let places = (1 + body_len / PLACE_BYTES).min(most);
        u32::try_from(places).unwrap_or(u32::MAX)
    }

    /// How many requests may wait now: `max_queued`, or while the queue is standing a
    /// quarter of it (at least one).
    pub fn queue_limit(&self) -> usize {
        self.queue_limit_at(std::time::Instant::now())
    }

    fn queue_limit_at(&self, now: std::time::Instant) -> usize {
        let most = self.limits.queued();
        if !self.standing.load(Ordering::Relaxed) {
            return most;
        }
        let quiet = self
            .nanos(now)
            .saturating_sub(self.last_refused.load(Ordering::Relaxed));
        if quiet >= STANDING.as_nanos() as u64 {
            // An interval without a refusal: the load is back within what the model serves.
            self.standing.store(false, Ordering::Relaxed);
            self.waits_long_since.store(0, Ordering::Relaxed);
            return most;
        }
        most.min((most / 4).max(1))
    }

    /// `at` in nanoseconds after the epoch, at least 1 (0 means never).
    fn nanos(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn refused(&self, now: std::time::Instant) {
        // The latest wins, whichever thread writes last.
        self.last_refused
            .fetch_max(self.nanos(now), Ordering::Relaxed);
    }

    /// Notes how long a request waited for its place: a queue whose requests all wait past
    /// `max_wait_ms` for [`STANDING`] is standing.
    fn waited(&self, wait: Duration, now: std::time::Instant) {
        let target = self.limits.max_wait_ms();
        if target == 0 {
            return;
        }
        if wait <= Duration::from_millis(target) {
            self.waits_long_since.store(0, Ordering::Relaxed);
            return;
        }
        let at = self.nanos(now);
        match self
            .waits_long_since
            .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {}
            Err(since) => {
                if at.saturating_sub(since) >= STANDING.as_nanos() as u64
                    && !self.standing.load(Ordering::Relaxed)
                {
                    // Its interval without refusals starts now.
                    self.refused(now);
                    self.standing.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Whether the queue is standing now.
    #[cfg(test)]
    fn is_standing(&self) -> bool {
        self.standing.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Whether a request arriving now would be refused: every place taken and the queue
    /// full ([`Admission::queue_limit`]).
    pub fn is_full(&self) -> bool {
        if self.running.available_permits() > 0 {
            return false;
        }
        let now = std::time::Instant::now();
        let full = self.queued.load(Ordering::Relaxed) >= self.queue_limit_at(now);
        if full {
            self.refused(now);
        }
        full
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// A place among the running requests: at once when one is free, after waiting in the
    /// queue (first come, first served) otherwise; refused when the queue is full
    /// ([`Admission::queue_limit`]) or the wait reaches `deadline`. A waiting request whose
    /// future is dropped (its client went away) leaves the queue.
    pub async fn enter(&self, deadline: Instant, body_len: usize) -> Result<Place, Refused> {
        let places = self.places_for(body_len);
        if let Ok(place) = self.running.clone().try_acquire_many_owned(places) {
            // Admitted without waiting: a run of long waits, if one had begun, is broken.
            if self.waits_long_since.load(Ordering::Relaxed) != 0 {
                self.waits_long_since.store(0, Ordering::Relaxed);
            }
            return Ok(place);
        }
        // Without a queue, a large request takes what places are free rather than being
        // refused behind small ones that keep a few of them taken.
        if self.limits.queued() == 0 {
            let free = u32::try_from(self.running.available_permits()).unwrap_or(u32::MAX);
            if free > 0
                && let Ok(place) = self
                    .running
                    .clone()
                    .try_acquire_many_owned(free.min(places))
            {
                return Ok(place);
            }
        }
        let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.queued);
        let queued_at = std::time::Instant::now();
        if ahead >= self.queue_limit_at(queued_at) {
            self.refused(queued_at);
            return Err(Refused::Full);
        }
        match tokio::time::timeout_at(deadline, self.running.clone().acquire_many_owned(places))
            .await
        {
            Ok(Ok(place)) => {
                let now = std::time::Instant::now();
                self.waited(now.duration_since(queued_at), now);
                Ok(place)
            }
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Refused::Full),
            Err(_) => {
                // A wait that ran to its deadline was a long one too.
                let now = std::time::Instant::now();
                self.waited(now.duration_since(queued_at), now);
                Err(Refused::Waited)
            }
        }
    }
}

/// Takes a request out of the queue count however its wait ends.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    fn admission(max_in_flight: usize, max_queued: usize) -> Admission {
        Admission::new(&LimitsConfig {
            max_in_flight: Some(max_in_flight),
            max_queued: Some(max_queued),
            max_wait_ms: Some(0),
            timeout_ms: 1_000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_past_the_places_wait_and_past_the_queue_are_refused() {
        let model = admission(1, 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(!model.is_full());
        let first = model.enter(deadline, 0).await.expect("a free place");
        assert!(!model.is_full(), "the queue has room");
        let mut waiting = Box::pin(model.enter(deadline, 0));
        assert!(waiting.as_mut().now_or_never().is_none());
        assert_eq!(model.queued(), 1);
        assert!(model.is_full());
        assert_eq!(model.enter(deadline, 0).await.unwrap_err(), Refused::Full);
        drop(first);
        assert!(waiting.await.is_ok(), "the waiting request gets the place");
        assert_eq!(model.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_deadline_and_a_dropped_wait_leaves_the_queue() {
        let model = admission(1, 4);
        let _running = model.enter(Instant::now(), 0).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(250);
        let started = Instant::now();
        assert_eq!(model.enter(deadline, 0).await.unwrap_err(), Refused::Waited);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        let mut gone = Box::pin(model.enter(deadline + Duration::from_secs(1), 0));
        assert!(gone.as_mut().now_or_never().is_none());
        assert_eq!(model.queued(), 1);
        drop(gone);
        assert_eq!(model.queued(), 0);
    }

    #[test]
    fn a_queue_that_waits_long_for_an_interval_is_cut_to_a_round_while_it_refuses() {
        let model = Admission::new(&LimitsConfig {
            max_in_flight: Some(4),
            max_queued: Some(44),
            max_wait_ms: Some(10),
            timeout_ms: 1_000,
        });
        let t0 = model.epoch + Duration::from_secs(1);
        let at = |ms| t0 + Duration::from_millis(ms);
        let long = Duration::from_millis(11);
        // Bursts: long waits that do not last an interval, or broken by a short one.
        model.waited(long, t0);
        model.waited(long, at(60));
        model.waited(Duration::from_millis(2), at(80));
        model.waited(long, at(120));
        model.waited(long, at(200));
        assert_eq!(model.queue_limit_at(at(200)), 44);
        // Every wait long for a whole interval: standing, a quarter of the queue.
        model.waited(long, at(220));
        assert!(model.is_standing());
        assert_eq!(model.queue_limit_at(at(230)), 11);
        // Short waits do not end it while requests are refused...
        model.waited(Duration::from_millis(1), at(300));
        model.refused(at(300));
        assert_eq!(model.queue_limit_at(at(390)), 11);
        // ... an interval without a refusal does.
        assert_eq!(model.queue_limit_at(at(400)), 44);
        assert!(!model.is_standing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_body_takes_a_place_for_each_share_of_it() {
        let model = admission(32, 0);
        let deadline = Instant::now() + Duration::from_secs(1);
        // 86 kB: one place and six for its bytes.
        let large = model.enter(deadline, 86_000).await.unwrap();
        assert_eq!(model.running.available_permits(), 25);
        let small: Vec<_> = futures::future::join_all((0..25).map(|_| model.enter(deadline, 300)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(model.enter(deadline, 300).await.unwrap_err(), Refused::Full);
        drop(large);
        assert_eq!(model.running.available_permits(), 7);
        // However large, a body takes at most a quarter of the places.
        drop(small);
        let huge = model.enter(deadline, 100_000_000).await.unwrap();
        assert_eq!(model.running.available_permits(), 24);
        drop(huge);
    }
}
