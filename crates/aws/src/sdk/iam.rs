//! IAM checks and the instance profile of an EC2NodeClass: a named `instanceProfile` must exist;
//! a `role` must exist and gets an instance profile Karpenter creates for it (as upstream
//! does); spot launches need the EC2 Spot service-linked role.

use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use karpenter_api::ec2::EC2NodeClass;

use super::error::{AwsError, from_sdk};
use super::launch::{cluster_tag, stable_hash};

/// Name of the EC2 Spot service-linked role.
pub const SPOT_SERVICE_LINKED_ROLE: &str = "AWSServiceRoleForEC2Spot";
/// The command that creates it.
pub const SPOT_SERVICE_LINKED_ROLE_FIX: &str =
    "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com";
/// Tag on instance profiles Karpenter created for an EC2NodeClass `role`.
pub const INSTANCE_PROFILE_NODECLASS_TAG: &str = "karpenter.k8s.aws/ec2nodeclass";

fn no_such_entity(code: Option<&str>) -> bool {
    code == Some("NoSuchEntity")
}

/// Whether the instance profile exists.
pub async fn instance_profile_exists(iam: &Client, name: &str) -> Result<bool, AwsError> {
    match iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if no_such_entity(e.code()) => Ok(false),
        Err(e) => Err(from_sdk("GetInstanceProfile", e)),
    }
}

/// Whether the role exists.
pub async fn role_exists(iam: &Client, name: &str) -> Result<bool, AwsError> {
    match iam.get_role().role_name(name).send().await {
        Ok(_) => Ok(true),
        Err(e) if no_such_entity(e.code()) => Ok(false),
        Err(e) => Err(from_sdk("GetRole", e)),
    }
}

/// Whether the EC2 Spot service-linked role exists in the account.
pub async fn spot_service_linked_role_exists(iam: &Client) -> Result<bool, AwsError> {
    role_exists(iam, SPOT_SERVICE_LINKED_ROLE).await
}

/// The name of the instance profile Karpenter manages for a NodeClass `role`:
/// `<cluster>_<hash of cluster, NodeClass, role>`, within IAM's 128-character limit.
pub fn managed_profile_name(cluster: &str, node_class: &str, role: &str) -> String {
    let hash = stable_hash(&[cluster, node_class, role]);
    let prefix: String = cluster.chars().take(100).collect();
    format!("{prefix}_{hash:016x}")
}

/// The instance profile instances of this NodeClass launch with: `spec.instanceProfile` after
/// checking it exists, or for `spec.role` a profile Karpenter creates (once) holding that role.
/// `Err(NodeClassNotReady)` with the fix in words when the profile or role does not exist.
pub async fn resolve_instance_profile(
    iam: &Client,
    cluster: &str,
    nc: &EC2NodeClass,
) -> Result<Option<String>, AwsError> {
    if let Some(profile) = &nc.spec.instance_profile {
        if instance_profile_exists(iam, profile).await? {
            return Ok(Some(profile.clone()));
        }
        return Err(AwsError::NodeClassNotReady(format!(
            "instance profile {profile:?} (spec.instanceProfile) does not exist; create it \
             (aws iam create-instance-profile --instance-profile-name {profile}) with the node \
             role, or set spec.role instead"
        )));
    }
    let Some(role) = &nc.spec.role else {
        return Ok(None);
    };
    // A role given as an ARN is looked up by its name (the part after the last '/').
    let role_name = role.rsplit('/').next().unwrap_or(role);
    if !role_exists(iam, role_name).await? {
        return Err(AwsError::NodeClassNotReady(format!(
            "role {role_name:?} (spec.role) does not exist; create the node role or fix the name"
        )));
    }
    let nc_name = nc.metadata.name.clone().unwrap_or_default();
    let profile = managed_profile_name(cluster, &nc_name, role_name);
    if instance_profile_exists(iam, &profile).await? {
        return Ok(Some(profile));
    }
    let created = iam
        .create_instance_profile()
        .instance_profile_name(&profile)
        .tags(
            Tag::builder()
                .key(cluster_tag(cluster))
                .value("owned")
                .build()?,
        )
        .tags(
            Tag::builder()
                .key(INSTANCE_PROFILE_NODECLASS_TAG)
                .value(&nc_name)
                .build()?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        // A concurrent resolution created it first.
        Err(e) if e.code() == Some("EntityAlreadyExists") => {}
        Err(e) => return Err(from_sdk("CreateInstanceProfile", e)),
    }
    match iam
        .add_role_to_instance_profile()
        .instance_profile_name(&profile)
        .role_name(role_name)
        .send()
        .await
    {
        Ok(_) => Ok(Some(profile)),
        // The role is already in it (LimitExceeded: a profile holds one role).
        Err(e) if matches!(e.code(), Some("LimitExceeded" | "EntityAlreadyExists")) => {
            Ok(Some(profile))
        }
        Err(e) => Err(from_sdk("AddRoleToInstanceProfile", e)),
    }
}

impl From<aws_sdk_iam::error::BuildError> for AwsError {
    fn from(e: aws_sdk_iam::error::BuildError) -> Self {
        AwsError::Fatal(format!("building an IAM request: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_profile_names_are_stable_and_short() {
        let a = managed_profile_name("demo", "default", "KarpenterNodeRole");
        assert_eq!(
            a,
            managed_profile_name("demo", "default", "KarpenterNodeRole")
        );
        assert_ne!(
            a,
            managed_profile_name("demo", "other", "KarpenterNodeRole")
        );
        assert!(a.starts_with("demo_"));
        let long = managed_profile_name(&"c".repeat(300), "x", "r");
        assert!(long.len() <= 128, "{}", long.len());
    }
}
