//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never act
//! at once.
//!
//! A replica holds the lease while it renews it within `leaseDurationSeconds`; another may
//! take it only after it expired. Every write carries the resource version it read, so when
//! two replicas race for an expired lease the API server lets one win and answers the other
//! 409. A leader that cannot renew in time stops acting before its lease can expire.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Who this replica is and how long a lease lasts.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub identity: String,
    pub lease_name: String,
    pub namespace: String,
    pub duration: Duration,
}

/// What this replica should do about the lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody has it: create it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Its holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it and renewed it in time.
    Follow { holder: String },
}

/// Decides from the lease as read (pure, so tests give it any time).
pub fn decide(lease: Option<&Lease>, me: &str, now_ms: i64) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return match lease {
            None => Decision::Create,
            Some(_) => Decision::TakeOver,
        };
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_millisecond());
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
    if now_ms >= renewed + duration_ms {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

fn micro_time(ms: i64) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(MicroTime)
}

impl Candidate {
    fn spec(&self, now_ms: i64, acquired_ms: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: micro_time(acquired_ms),
            renew_time: micro_time(now_ms),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: reads the lease and creates, renews or takes it over when it may.
    /// `Ok(true)` means this replica leads until `now + duration`.
    pub async fn try_lead(&self, client: &Client, now_ms: i64) -> Result<bool, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let current = api.get_opt(&self.lease_name).await?;
        let decision = decide(current.as_ref(), &self.identity, now_ms);
        let written = match (&decision, current) {
            (Decision::Follow { holder }, _) => {
                tracing::debug!(holder = %holder, "another operator replica leads");
                return Ok(false);
            }
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.lease_name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now_ms, now_ms, 0)),
                };
                api.create(&PostParams::default(), &lease).await
            }
            (_, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    let acquired = old.acquire_time.map_or(now_ms, |t| t.0.as_millisecond());
                    self.spec(now_ms, acquired, transitions)
                } else {
                    self.spec(now_ms, now_ms, transitions + 1)
                });
                // The resource version read stays in the object: a replace after someone
                // else's write is refused with 409.
                api.replace(&self.lease_name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match written {
            Ok(_) => {
                if decision != Decision::Renew {
                    tracing::info!(identity = %self.identity, lease = %self.lease_name, "leading: this operator replica acts");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads (trying every `duration / 3`), then returns. It reads
    /// the Lease on a timer rather than watching it: a held lease becomes free by expiring,
    /// which no watch event announces, so a watch would still need this timer.
    pub async fn acquire(&self, client: &Client) {
        let every = self.duration / 3;
        loop {
            match self.try_lead(client, super::operator::now_ms()).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Renews the lease every `duration / 3` and returns when it could not be renewed before
    /// two thirds of it ran out: the caller must stop acting then, before another replica
    /// may take the lease. Each attempt is bounded, so a hung API call cannot hold it past.
    /// The timer is the protocol itself: a lease stays held only while it is renewed.
    pub async fn keep(&self, client: &Client) -> String {
        let every = self.duration / 3;
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            // The lease, as written, lasts until `renewed + duration`; stop a third before.
            let deadline = renewed + self.duration * 2 / 3;
            let started = tokio::time::Instant::now();
            let attempt = match tokio::time::timeout_at(
                deadline,
                self.try_lead(client, super::operator::now_ms()),
            )
            .await
            {
                Ok(attempt) => attempt,
                Err(_) => {
                    return "the lease could not be renewed in time: the API did not answer".into();
                }
            };
            match attempt {
                Ok(true) => renewed = started,
                Ok(false) => return "another replica holds the lease".into(),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return format!("the lease could not be renewed in time: {e}");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the leader lease; trying again")
                }
            }
        }
    }
}
