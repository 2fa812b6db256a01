//! Admission control: how much work one model takes at once. A bounded number of requests
//! run on its slots; a bounded queue waits in front of them; past both, a request is refused
//! at once, so load beyond what the model can serve is shed (503 with `Retry-After`) instead
//! of making every answer late and holding memory for every waiting body.
//!
//! A request that finds a place free takes it with one atomic operation and no timer; only
//! a request that must wait arms its deadline.

use std::sync::atomic::{AtomicUsize, Ordering};

use std::sync::Arc;
use teal_core::config::LimitsConfig;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One model's bounds, shared by every route snapshot of the model (a switch keeps them).
pub struct Admission {
    limits: LimitsConfig,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
}

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
        }
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Whether a request arriving now would be refused: every place taken and the queue
    /// full.
    pub fn is_full(&self) -> bool {
        self.running.available_permits() == 0
            && self.queued.load(Ordering::Relaxed) >= self.limits.queued()
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// A place among the running requests: at once when one is free, after waiting in the
    /// queue (first come, first served) otherwise; refused when the queue is full or the wait
    /// reaches `deadline`. A waiting request whose future is dropped (its client went away)
    /// leaves the queue.
    pub async fn enter(&self, deadline: Instant) -> Result<Place, Refused> {
        if let Ok(place) = self.running.clone().try_acquire_owned() {
            return Ok(place);
        }
        let ahead = self.queued.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.queued);
        if ahead >= self.limits.queued() {
            return Err(Refused::Full);
        }
        match tokio::time::timeout_at(deadline, self.running.clone().acquire_owned()).await {
            Ok(Ok(place)) => Ok(place),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(Refused::Full),
            Err(_) => Err(Refused::Waited),
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
            timeout_ms: 1_000,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_past_the_places_wait_and_past_the_queue_are_refused() {
        let model = admission(1, 1);
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(!model.is_full());
        let first = model.enter(deadline).await.expect("a free place");
        assert!(!model.is_full(), "the queue has room");
        let mut waiting = Box::pin(model.enter(deadline));
        assert!(waiting.as_mut().now_or_never().is_none());
        assert_eq!(model.queued(), 1);
        assert!(model.is_full());
        assert_eq!(model.enter(deadline).await.unwrap_err(), Refused::Full);
        drop(first);
        assert!(waiting.await.is_ok(), "the waiting request gets the place");
        assert_eq!(model.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_deadline_and_a_dropped_wait_leaves_the_queue() {
        let model = admission(1, 4);
        let _running = model.enter(Instant::now()).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(250);
        let started = Instant::now();
        assert_eq!(model.enter(deadline).await.unwrap_err(), Refused::Waited);
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        let mut gone = Box::pin(model.enter(deadline + Duration::from_secs(1)));
        assert!(gone.as_mut().now_or_never().is_none());
        assert_eq!(model.queued(), 1);
        drop(gone);
        assert_eq!(model.queued(), 0);
    }
}
