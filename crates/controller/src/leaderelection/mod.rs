//! Leader election on a `coordination.k8s.io/v1` Lease (upstream: `karpenter-leader-election`
//! in the controller's namespace).
//!
//! Every replica runs the [`Elector`]: each `retry_period` it reads the Lease and, by
//! [`decide::decide`], acquires it (missing, released or expired), renews it (ours) or follows.
//! Writes carry the `resourceVersion` read, so two replicas racing for an expired Lease cannot
//! both win: the loser gets a conflict and stays a follower. The outcome is published on a
//! `watch` channel; the caller runs its writing loops only while it reads `true`.
//!
//! A leader that cannot renew for `renew_deadline` (shorter than the lease duration) steps down
//! on its own, before anyone else may take over, so two replicas never act at once as long as
//! clocks agree to within the difference. On shutdown [`Elector::release`] hands the Lease
//! over at once.

pub mod decide;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::error::{Result, is_status};
use decide::{Decision, acquired, decide, released, renewed};

/// Upstream's Lease name (`LEADER_ELECTION_NAME`).
pub const DEFAULT_LEASE_NAME: &str = "karpenter-leader-election";

/// Where and how to elect.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace (the controller's own).
    pub namespace: String,
    /// This replica's identity, unique among replicas (pod name plus a random part).
    pub identity: String,
    /// How long a Lease holds without renewal (15 s, as client-go's default).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (10 s).
    pub renew_deadline: Duration,
    /// How often the Lease is read and renewed (2 s).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// client-go's defaults for this Lease and identity.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    leader: watch::Sender<bool>,
    /// When we last wrote the Lease as its holder.
    last_renewal: Mutex<Option<Instant>>,
}

impl Elector {
    /// An elector (not running yet) and the channel that tells whether we lead.
    pub fn new(client: Client, config: LeaderElectionConfig) -> (Self, watch::Receiver<bool>) {
        let (leader, rx) = watch::channel(false);
        let elector = Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leader,
            last_renewal: Mutex::new(None),
        };
        (elector, rx)
    }

    /// Whether this replica currently leads.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Campaigns and renews until the future is dropped.
    pub async fn run(&self) {
        tracing::info!(
            lease = %self.config.name,
            namespace = %self.config.namespace,
            identity = %self.config.identity,
            "leader election started"
        );
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, lease = %self.config.name, "leader election round failed");
            }
            self.step_down_if_stale();
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// One read–decide–write round.
    async fn tick(&self) -> Result<()> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.config.name).await?;
        match decide(lease.as_ref(), &self.config.identity, now) {
            Decision::Follow { holder } => {
                if self.is_leader() {
                    tracing::warn!(%holder, "another replica holds the lease; stepping down");
                }
                self.set_leader(false);
                Ok(())
            }
            Decision::Renew => {
                let Some(lease) = lease else {
                    return Ok(());
                };
                let mut next = lease.clone();
                next.spec = Some(renewed(&lease, now, self.config.lease_duration));
                self.write(next, false).await
            }
            Decision::Acquire => {
                let spec = acquired(
                    lease.as_ref(),
                    &self.config.identity,
                    now,
                    self.config.lease_duration,
                );
                match lease {
                    Some(mut l) => {
                        l.spec = Some(spec);
                        self.write(l, true).await
                    }
                    None => {
                        let l = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.config.name.clone()),
                                namespace: Some(self.config.namespace.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(spec),
                        };
                        match self.api.create(&PostParams::default(), &l).await {
                            Ok(_) => self.won(),
                            // Another replica created it first: follow it next round.
                            Err(e) if is_status(&e, 409) => Ok(()),
                            Err(e) => Err(e.into()),
                        }
                    }
                }
            }
        }
    }

    /// Replaces the Lease (guarded by the resourceVersion it was read at).
    async fn write(&self, lease: Lease, acquiring: bool) -> Result<()> {
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => self.won(),
            // Someone wrote it since we read it (a renewal, or a rival's takeover): re-read next
            // round; as a leader, `step_down_if_stale` bounds how long we act on old news.
            Err(e) if is_status(&e, 409) => {
                if acquiring {
                    tracing::debug!("lost the race for the lease");
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn won(&self) -> Result<()> {
        if let Ok(mut last) = self.last_renewal.lock() {
            *last = Some(Instant::now());
        }
        if !self.is_leader() {
            tracing::info!(identity = %self.config.identity, "acquired the lease; leading");
        }
        self.set_leader(true);
        Ok(())
    }

    /// A leader whose last successful renewal is older than the renew deadline stops acting.
    fn step_down_if_stale(&self) {
        if !self.is_leader() {
            return;
        }
        let last = self.last_renewal.lock().ok().and_then(|l| *l);
        if last.is_none_or(|t| t.elapsed() >= self.config.renew_deadline) {
            tracing::warn!("could not renew the lease in time; stepping down");
            self.set_leader(false);
        }
    }

    fn set_leader(&self, leading: bool) {
        self.leader
            .send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }

    /// Gives the Lease up if we hold it, so another replica takes over without waiting for it
    /// to expire. Call after the writing loops have stopped.
    pub async fn release(&self) -> Result<()> {
        let was_leader = self.is_leader();
        self.set_leader(false);
        if !was_leader {
            return Ok(());
        }
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        if decide::holder(&lease) != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut next = lease.clone();
        next.spec = Some(released(&lease, Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await?;
        tracing::info!("released the lease");
        Ok(())
    }
}

/// A process-unique identity: `<base>_<pid>-<random>` where `base` is the pod name (or the
/// host name), so restarts and replicas never share one.
pub fn identity(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{base}_{}-{nanos:08x}", std::process::id())
}
