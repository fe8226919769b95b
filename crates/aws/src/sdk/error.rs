//! Errors of the SDK provider, shaped like `karpenter_providers::CloudProviderError` so the
//! `CloudProvider` impl is a one-to-one mapping.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// Everything an EC2 provider call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No capacity for any offering tried (EC2 `InsufficientInstanceCapacity` and friends).
    /// The offerings tried have been marked unavailable for a while.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// The instance does not exist (any more).
    #[error("instance not found: {0}")]
    NodeClaimNotFound(String),
    /// The EC2NodeClass resolves to nothing usable (no subnet, no security group...).
    #[error("node class not ready: {0}")]
    NodeClassNotReady(String),
    /// Throttling, timeouts, 5xx: worth retrying.
    #[error("transient AWS error: {0}")]
    Transient(String),
    /// Anything retrying will not fix (invalid request, missing permission...).
    #[error("AWS error: {0}")]
    Fatal(String),
}

/// EC2 error codes that mean "no capacity for this offering right now".
pub const CAPACITY_ERROR_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "ReservationCapacityExceeded",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "UnfulfillableCapacity",
    "Unsupported",
];

/// EC2 error codes worth retrying.
const TRANSIENT_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
    "Unavailable",
];

/// Whether the code means "instance gone".
pub fn is_not_found_code(code: &str) -> bool {
    code == "InvalidInstanceID.NotFound" || code == "InvalidInstanceID.Malformed"
}

/// Maps one EC2 error code and message onto [`AwsError`].
pub fn classify(code: &str, message: &str, context: &str) -> AwsError {
    let text = format!("{context}: {code}: {message}");
    if CAPACITY_ERROR_CODES.contains(&code) {
        AwsError::InsufficientCapacity(text)
    } else if is_not_found_code(code) {
        AwsError::NodeClaimNotFound(text)
    } else if TRANSIENT_CODES.contains(&code) {
        AwsError::Transient(text)
    } else {
        AwsError::Fatal(text)
    }
}

/// Maps an SDK call failure: service errors by their code, transport failures (timeouts,
/// connection refused, dispatch errors) as transient.
pub fn from_sdk<E, R>(context: &str, err: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            classify(
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or(""),
                context,
            )
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsError::Transient(format!("{context}: {}", err_chain(&err)))
        }
        _ => AwsError::Fatal(format!("{context}: {}", err_chain(&err))),
    }
}

/// The error and its sources on one line (SDK errors hide the useful part in `source()`).
fn err_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// CreateFleet error code when the Spot service-linked role is missing.
pub const SPOT_ROLE_ERROR: &str = "AuthFailure.ServiceLinkedRoleCreationNotPermitted";

/// The error of a CreateFleet that launched nothing: insufficient capacity when any override
/// failed for capacity (the caller marks the offerings unavailable and the NodeClaim is
/// re-solved), otherwise the first error's own class.
pub fn fleet_error(errors: &[(String, String)]) -> AwsError {
    let all: Vec<String> = errors.iter().map(|(c, m)| format!("{c}: {m}")).collect();
    let summary = if all.is_empty() {
        "no instance and no error returned".to_owned()
    } else {
        all.join("; ")
    };
    if errors
        .iter()
        .any(|(c, _)| CAPACITY_ERROR_CODES.contains(&c.as_str()))
    {
        return AwsError::InsufficientCapacity(format!("CreateFleet: {summary}"));
    }
    if errors.iter().any(|(c, _)| c == SPOT_ROLE_ERROR) {
        return AwsError::Fatal(format!(
            "CreateFleet: spot capacity needs the EC2 Spot service-linked role, which this account \
             lacks and Karpenter may not create; run `aws iam create-service-linked-role \
             --aws-service-name spot.amazonaws.com` once, or allow only on-demand ({summary})"
        ));
    }
    match errors.first() {
        Some((code, _)) if is_not_found_code(code) => {
            AwsError::Fatal(format!("CreateFleet: {summary}"))
        }
        Some((code, message)) => classify(code, message, "CreateFleet"),
        None => AwsError::Transient(format!("CreateFleet: {summary}")),
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;

    #[test]
    fn fleet_errors_with_any_capacity_code_are_insufficient_capacity() {
        let e = fleet_error(&[
            ("InvalidParameterValue".into(), "bad".into()),
            (
                "InsufficientInstanceCapacity".into(),
                "no m5.large in us-east-1a".into(),
            ),
        ]);
        assert!(matches!(e, AwsError::InsufficientCapacity(_)), "{e:?}");
        assert!(e.to_string().contains("m5.large"));
        let e = fleet_error(&[("UnauthorizedOperation".into(), "denied".into())]);
        assert!(matches!(e, AwsError::Fatal(_)), "{e:?}");
        assert!(matches!(fleet_error(&[]), AwsError::Transient(_)));
        let e = fleet_error(&[(SPOT_ROLE_ERROR.into(), "not permitted".into())]);
        assert!(
            e.to_string().contains(
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
            ),
            "{e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_codes_map_to_insufficient_capacity() {
        let e = classify(
            "InsufficientInstanceCapacity",
            "no m5.large in us-east-1a",
            "CreateFleet",
        );
        assert!(matches!(e, AwsError::InsufficientCapacity(_)), "{e:?}");
        assert!(e.to_string().contains("us-east-1a"));
        assert!(matches!(
            classify("InvalidInstanceID.NotFound", "", "x"),
            AwsError::NodeClaimNotFound(_)
        ));
        assert!(matches!(
            classify("RequestLimitExceeded", "", "x"),
            AwsError::Transient(_)
        ));
        assert!(matches!(
            classify("UnauthorizedOperation", "", "x"),
            AwsError::Fatal(_)
        ));
    }
}
