//! EventBridge messages of the interruption queue, parsed into what Karpenter does about them.
//! Parsing never panics: anything malformed or unknown is a [`ParseError`] (the caller logs it
//! and deletes the message, so a poison message cannot block the queue).

use serde::Deserialize;

/// `detail-type` of a spot interruption warning (two minutes' notice).
pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";
/// `detail-type` of a rebalance recommendation.
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";
/// `detail-type` of an instance state change.
pub const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
/// `detail-type` of an AWS Health event.
pub const HEALTH_EVENT: &str = "AWS Health Event";

/// Instance states that mean the instance is going away.
pub const STOPPING_STATES: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

/// Why a message was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or not the shape of its `detail-type`.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A `source`/`detail-type` pair this controller does not handle.
    #[error("unsupported message: source {event_source:?}, detail-type {detail_type:?}")]
    Unsupported {
        /// `source` (not named `source`: thiserror reserves that name for the cause).
        event_source: String,
        /// `detail-type`.
        detail_type: String,
    },
    /// The message names no instance.
    #[error("message names no instance")]
    NoInstance,
}

/// What happened to the instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Spot capacity is being reclaimed.
    SpotInterruption,
    /// EC2 recommends moving off this spot instance (upstream only reports it by default).
    RebalanceRecommendation,
    /// An AWS Health scheduled change (maintenance, retirement) for these instances.
    ScheduledChange,
    /// The instance is stopping, stopped, shutting down or terminated (the state).
    StateChange(String),
}

impl Kind {
    /// Whether the NodeClaim should be replaced (drained and deleted) now.
    pub fn replaces(&self) -> bool {
        !matches!(self, Kind::RebalanceRecommendation)
    }

    /// The Event reason on the NodeClaim/Node (upstream's names).
    pub fn reason(&self) -> &'static str {
        match self {
            Kind::SpotInterruption => "SpotInterrupted",
            Kind::RebalanceRecommendation => "SpotRebalanceRecommendation",
            Kind::ScheduledChange => "InstanceUnhealthy",
            Kind::StateChange(s) if s == "terminated" || s == "shutting-down" => {
                "InstanceTerminating"
            }
            Kind::StateChange(_) => "InstanceStopping",
        }
    }

    /// The `message_type` metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Kind::SpotInterruption => "spot_interrupted",
            Kind::RebalanceRecommendation => "rebalance_recommendation",
            Kind::ScheduledChange => "scheduled_change",
            Kind::StateChange(_) => "state_change",
        }
    }
}

/// One understood message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// What happened.
    pub kind: Kind,
    /// The instances it happened to.
    pub instance_ids: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    source: String,
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    detail: serde_json::Value,
}

#[derive(Deserialize)]
struct InstanceDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
}

#[derive(Deserialize)]
struct StateDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthDetail {
    #[serde(default)]
    service: String,
    #[serde(default)]
    event_type_category: String,
    #[serde(default)]
    affected_entities: Vec<AffectedEntity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AffectedEntity {
    #[serde(default)]
    entity_value: String,
}

/// Parses one message body. `Ok(None)`: understood, nothing to do (a state change to
/// `running`, a Health event that is not an EC2 scheduled change).
pub fn parse(body: &str) -> Result<Option<Interruption>, ParseError> {
    let env: Envelope = serde_json::from_str(body)?;
    let one = |kind: Kind, id: String| -> Result<Option<Interruption>, ParseError> {
        if id.is_empty() {
            return Err(ParseError::NoInstance);
        }
        Ok(Some(Interruption {
            kind,
            instance_ids: vec![id],
        }))
    };
    match (env.source.as_str(), env.detail_type.as_str()) {
        ("aws.ec2", SPOT_INTERRUPTION) => {
            let d: InstanceDetail = serde_json::from_value(env.detail)?;
            one(Kind::SpotInterruption, d.instance_id)
        }
        ("aws.ec2", REBALANCE_RECOMMENDATION) => {
            let d: InstanceDetail = serde_json::from_value(env.detail)?;
            one(Kind::RebalanceRecommendation, d.instance_id)
        }
        ("aws.ec2", STATE_CHANGE) => {
            let d: StateDetail = serde_json::from_value(env.detail)?;
            if !STOPPING_STATES.contains(&d.state.as_str()) {
                return Ok(None);
            }
            one(Kind::StateChange(d.state), d.instance_id)
        }
        ("aws.health", HEALTH_EVENT) => {
            let d: HealthDetail = serde_json::from_value(env.detail)?;
            if d.service != "EC2" || d.event_type_category != "scheduledChange" {
                return Ok(None);
            }
            let ids: Vec<String> = d
                .affected_entities
                .into_iter()
                .map(|e| e.entity_value)
                .filter(|v| v.starts_with("i-"))
                .collect();
            if ids.is_empty() {
                return Err(ParseError::NoInstance);
            }
            Ok(Some(Interruption {
                kind: Kind::ScheduledChange,
                instance_ids: ids,
            }))
        }
        (source, detail_type) => Err(ParseError::Unsupported {
            event_source: source.to_owned(),
            detail_type: detail_type.to_owned(),
        }),
    }
}

/// A spot interruption warning for `instance_id`, as EventBridge delivers it (tests and tools).
pub fn spot_interruption_message(instance_id: &str, region: &str) -> String {
    serde_json::json!({
        "version": "0",
        "id": format!("karpenter-{instance_id}"),
        "detail-type": SPOT_INTERRUPTION,
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2024-01-01T00:00:00Z",
        "region": region,
        "resources": [format!("arn:aws:ec2:{region}:instance/{instance_id}")],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_interruption() {
        let m = parse(&spot_interruption_message("i-0abc", "us-east-1"));
        assert_eq!(
            m.ok().flatten(),
            Some(Interruption {
                kind: Kind::SpotInterruption,
                instance_ids: vec!["i-0abc".into()]
            })
        );
    }

    #[test]
    fn state_changes_only_when_going_away() {
        let msg = |state: &str| {
            format!(
                r#"{{"source":"aws.ec2","detail-type":"{STATE_CHANGE}","detail":{{"instance-id":"i-1","state":"{state}"}}}}"#
            )
        };
        let m = parse(&msg("stopping")).ok().flatten();
        assert_eq!(
            m.map(|i| i.kind),
            Some(Kind::StateChange("stopping".into()))
        );
        assert_eq!(parse(&msg("running")).ok().flatten(), None);
        let t = parse(&msg("terminated")).ok().flatten();
        assert_eq!(t.map(|i| i.kind.reason()), Some("InstanceTerminating"));
    }

    #[test]
    fn health_scheduled_change_names_every_instance() {
        let body = r#"{"source":"aws.health","detail-type":"AWS Health Event","detail":{
            "service":"EC2","eventTypeCategory":"scheduledChange",
            "affectedEntities":[{"entityValue":"i-1"},{"entityValue":"i-2"}]}}"#;
        let m = parse(body).ok().flatten();
        assert_eq!(
            m,
            Some(Interruption {
                kind: Kind::ScheduledChange,
                instance_ids: vec!["i-1".into(), "i-2".into()]
            })
        );
        let other = body.replace("scheduledChange", "issue");
        assert_eq!(parse(&other).ok().flatten(), None);
    }

    #[test]
    fn rebalance_is_reported_not_acted_on() {
        let body = format!(
            r#"{{"source":"aws.ec2","detail-type":"{REBALANCE_RECOMMENDATION}","detail":{{"instance-id":"i-1"}}}}"#
        );
        let m = parse(&body).ok().flatten();
        assert!(m.is_some_and(|i| !i.kind.replaces()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(parse("not json"), Err(ParseError::Malformed(_))));
        assert!(parse("[]").is_err());
        assert!(parse("").is_err());
        assert!(matches!(
            parse(r#"{"source":"aws.s3","detail-type":"x"}"#),
            Err(ParseError::Unsupported { .. })
        ));
        assert!(matches!(
            parse(&format!(
                r#"{{"source":"aws.ec2","detail-type":"{SPOT_INTERRUPTION}","detail":{{}}}}"#
            )),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(&format!(
                r#"{{"source":"aws.ec2","detail-type":"{SPOT_INTERRUPTION}","detail":{{"instance-id":""}}}}"#
            )),
            Err(ParseError::NoInstance)
        ));
    }
}
