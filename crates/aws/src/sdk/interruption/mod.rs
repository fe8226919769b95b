//! The interruption controller: long-polls the SQS queue that EventBridge feeds (spot
//! interruption warnings, rebalance recommendations, AWS Health scheduled changes, instance
//! state changes), finds the NodeClaim of each affected instance, publishes an Event on it and
//! its Node, and deletes the NodeClaim (the controller's termination flow taints and drains the
//! node, and the provisioner launches a replacement for the evicted pods) before the instance
//! disappears. Every message is deleted once handled; malformed ones are logged and deleted.

pub mod messages;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client as SqsClient;
use k8s_openapi::api::core::v1::ObjectReference;
use karpenter_api::v1::NodeClaim;
use kube::api::DeleteParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::error::{AwsError, from_sdk};
use super::launch;
pub use messages::{Interruption, Kind, ParseError, parse};

/// `{message_type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageType {
    /// `spot_interrupted`, `rebalance_recommendation`, `scheduled_change`, `state_change`,
    /// `no_op` or `unparseable`.
    pub message_type: String,
}

/// Upstream's interruption metrics.
#[derive(Debug, Default)]
pub struct InterruptionMetrics {
    /// `karpenter_interruption_received_messages_total{message_type}`.
    pub received: Family<MessageType, Counter>,
    /// `karpenter_interruption_deleted_messages_total`.
    pub deleted: Counter,
}

impl InterruptionMetrics {
    /// The metrics, registered in `registry` (whose `karpenter` prefix completes the names).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.register(
            "interruption_received_messages",
            "Interruption queue messages received, by type",
            m.received.clone(),
        );
        registry.register(
            "interruption_deleted_messages",
            "Interruption queue messages deleted",
            m.deleted.clone(),
        );
        m
    }
}

/// Configuration of the interruption controller.
#[derive(Debug, Clone)]
pub struct InterruptionOptions {
    /// Queue name (`INTERRUPTION_QUEUE`, as upstream) or URL.
    pub queue: String,
    /// Long-poll wait per ReceiveMessage (SQS allows up to 20 s).
    pub wait: Duration,
    /// Identity of this replica in events.
    pub instance: Option<String>,
}

impl InterruptionOptions {
    /// Upstream defaults for `queue`: 20 s long polls.
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            wait: Duration::from_secs(20),
            instance: None,
        }
    }
}

/// What handling one message did (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not understood; deleted.
    Unparseable(String),
    /// Understood, nothing to do.
    NoOp,
    /// These NodeClaims were deleted (replaced) or, for a rebalance recommendation, reported.
    Handled {
        /// What happened.
        kind: Kind,
        /// NodeClaims found for the message's instances.
        node_claims: Vec<String>,
    },
}

/// The interruption controller.
pub struct InterruptionController {
    client: Client,
    sqs: SqsClient,
    recorder: Recorder,
    options: InterruptionOptions,
    metrics: Arc<InterruptionMetrics>,
}

impl InterruptionController {
    /// A controller reading `options.queue` with `sqs`, acting on NodeClaims through `client`.
    pub fn new(
        client: Client,
        sqs: SqsClient,
        options: InterruptionOptions,
        metrics: Option<Arc<InterruptionMetrics>>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: super::status::MANAGER.to_owned(),
                instance: options.instance.clone(),
            },
        );
        Self {
            client,
            sqs,
            recorder,
            options,
            metrics: metrics.unwrap_or_default(),
        }
    }

    /// The queue URL: the option itself when it is a URL, else GetQueueUrl of the name.
    pub async fn queue_url(&self) -> Result<String, AwsError> {
        if self.options.queue.starts_with("http://") || self.options.queue.starts_with("https://") {
            return Ok(self.options.queue.clone());
        }
        let out = self
            .sqs
            .get_queue_url()
            .queue_name(&self.options.queue)
            .send()
            .await
            .map_err(|e| from_sdk("GetQueueUrl", e))?;
        out.queue_url()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Fatal(format!("no URL for queue {:?}", self.options.queue)))
    }

    /// Polls until dropped. With `leader`, only polls while it reads `true` (one replica acts).
    pub async fn run(self, mut leader: Option<watch::Receiver<bool>>) {
        let mut url = None;
        loop {
            if let Some(l) = leader.as_mut()
                && l.wait_for(|v| *v).await.is_err()
            {
                return;
            }
            let queue = match &url {
                Some(u) => Ok(String::clone(u)),
                None => self.queue_url().await,
            };
            let result = match queue {
                Ok(q) => {
                    url = Some(q.clone());
                    self.poll_once(&q).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(queue = %self.options.queue, error = %e, "interruption queue poll failed");
                // Back off before the next poll (not synchronisation: a failing queue must not spin).
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// One long poll (≤ 10 messages): handles and deletes each message.
    pub async fn poll_once(&self, queue_url: &str) -> Result<Vec<Outcome>, AwsError> {
        let wait = i32::try_from(self.options.wait.as_secs().min(20)).unwrap_or(20);
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait)
            .send()
            .await
            .map_err(|e| from_sdk("ReceiveMessage", e))?;
        let mut outcomes = Vec::new();
        for m in out.messages() {
            let outcome = self.handle(m.body().unwrap_or_default()).await;
            let outcome = match outcome {
                Ok(o) => o,
                // The NodeClaim could not be deleted: keep the message (it becomes visible
                // again after the visibility timeout) and retry then.
                Err(e) => {
                    tracing::warn!(error = %e, "handling an interruption message failed; will retry");
                    continue;
                }
            };
            if let Some(handle) = m.receipt_handle() {
                self.sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(|e| from_sdk("DeleteMessage", e))?;
                self.metrics.deleted.inc();
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    fn count(&self, label: &str) {
        self.metrics
            .received
            .get_or_create(&MessageType {
                message_type: label.to_owned(),
            })
            .inc();
    }

    /// Handles one message body: parse, find the NodeClaims, publish Events, delete the
    /// NodeClaims when the kind calls for a replacement.
    pub async fn handle(&self, body: &str) -> Result<Outcome, kube::Error> {
        let interruption = match parse(body) {
            Ok(Some(i)) => i,
            Ok(None) => {
                self.count("no_op");
                return Ok(Outcome::NoOp);
            }
            Err(e) => {
                self.count("unparseable");
                tracing::warn!(error = %e, "deleting an interruption message that cannot be handled");
                return Ok(Outcome::Unparseable(e.to_string()));
            }
        };
        self.count(interruption.kind.metric_label());
        let claims = Api::<NodeClaim>::all(self.client.clone())
            .list(&Default::default())
            .await?;
        let affected: Vec<&NodeClaim> = claims
            .items
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .and_then(launch::instance_id)
                    .is_some_and(|id| interruption.instance_ids.iter().any(|i| i == id))
            })
            .collect();
        let kind = &interruption.kind;
        for claim in &affected {
            let name = claim.name_any();
            let note = format!(
                "{}: instance {} of NodeClaim {name}{}",
                kind.reason(),
                claim
                    .status
                    .as_ref()
                    .and_then(|s| s.provider_id.clone())
                    .unwrap_or_default(),
                if kind.replaces() {
                    "; replacing it (cordon, drain, delete)"
                } else {
                    "; no action (rebalance recommendations are only reported)"
                }
            );
            tracing::info!(NodeClaim = %name, reason = kind.reason(), "interruption");
            self.event(&claim.object_ref(&()), kind.reason(), &note)
                .await;
            if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) {
                let node_ref = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node),
                    ..ObjectReference::default()
                };
                self.event(&node_ref, kind.reason(), &note).await;
            }
            if kind.replaces() && claim.metadata.deletion_timestamp.is_none() {
                match Api::<NodeClaim>::all(self.client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Outcome::Handled {
            kind: kind.clone(),
            node_claims: affected.iter().map(|c| c.name_any()).collect(),
        })
    }

    async fn event(&self, regarding: &ObjectReference, reason: &str, note: &str) {
        let ev = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Interrupt".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            tracing::warn!(error = %e, reason, "publishing an interruption event failed");
        }
    }
}
