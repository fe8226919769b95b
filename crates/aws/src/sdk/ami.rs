//! AMI aliases (`amiSelectorTerms: [{alias: al2023@latest}]`): the SSM parameters AWS publishes
//! for its EKS-optimised images, per Kubernetes version and architecture, as upstream
//! karpenter-provider-aws looks them up (`pkg/providers/amifamily/{al2,al2023,bottlerocket,
//! windows}.go`). Only the standard variants are resolved (no NVIDIA/Neuron images).
//!
//! The path builders and parsers are pure; [`lookup`] does the GetParameter calls.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use k8s_openapi::apimachinery::pkg::version::Info;

use super::error::{AwsError, from_sdk};

/// The version that follows AWS's newest release.
pub const LATEST: &str = "latest";

/// Why an alias cannot be turned into SSM parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// Not `family@version`.
    #[error("alias {0:?} is not family@version (e.g. al2023@latest)")]
    Malformed(String),
    /// A family upstream has no alias for.
    #[error(
        "alias {0:?}: unknown family (use al2, al2023, bottlerocket, windows2019 or windows2022)"
    )]
    UnknownFamily(String),
    /// Windows images are published for `latest` only.
    #[error("alias {0:?}: Windows aliases only support the version \"latest\"")]
    PinnedWindows(String),
}

/// An image family that has an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Amazon Linux 2.
    Al2,
    /// Amazon Linux 2023.
    Al2023,
    /// Bottlerocket.
    Bottlerocket,
    /// Windows Server 2019 Core.
    Windows2019,
    /// Windows Server 2022 Core.
    Windows2022,
}

/// A parsed alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The family before the `@`.
    pub family: Family,
    /// `latest` or a pinned release such as `v20240807`.
    pub version: String,
}

impl Alias {
    /// Parses `family@version`; the family is case-insensitive like upstream's.
    pub fn parse(alias: &str) -> Result<Self, AliasError> {
        let (family, version) = alias
            .split_once('@')
            .filter(|(f, v)| !f.is_empty() && !v.is_empty())
            .ok_or_else(|| AliasError::Malformed(alias.to_owned()))?;
        let family = match family.to_ascii_lowercase().as_str() {
            "al2" => Family::Al2,
            "al2023" => Family::Al2023,
            "bottlerocket" => Family::Bottlerocket,
            "windows2019" => Family::Windows2019,
            "windows2022" => Family::Windows2022,
            _ => return Err(AliasError::UnknownFamily(alias.to_owned())),
        };
        if matches!(family, Family::Windows2019 | Family::Windows2022) && version != LATEST {
            return Err(AliasError::PinnedWindows(alias.to_owned()));
        }
        Ok(Self {
            family,
            version: version.to_owned(),
        })
    }

    /// The SSM parameters holding this alias's image ids for Kubernetes `k8s` (`1.31`), one per
    /// architecture the family publishes (the image's own architecture comes from
    /// DescribeImages, not from the path).
    pub fn parameters(&self, k8s: &str) -> Vec<String> {
        let v = self.version.as_str();
        let latest = v == LATEST;
        let eks = format!("/aws/service/eks/optimized-ami/{k8s}");
        match self.family {
            Family::Al2023 => ["x86_64", "arm64"]
                .iter()
                .map(|arch| {
                    let name = if latest {
                        "recommended".to_owned()
                    } else {
                        format!("amazon-eks-node-al2023-{arch}-standard-{k8s}-{v}")
                    };
                    format!("{eks}/amazon-linux-2023/{arch}/standard/{name}/image_id")
                })
                .collect(),
            Family::Al2 => [
                ("amazon-linux-2", "node"),
                ("amazon-linux-2-arm64", "arm64-node"),
            ]
            .iter()
            .map(|(dir, kind)| {
                let name = if latest {
                    "recommended".to_owned()
                } else {
                    format!("amazon-eks-{kind}-{k8s}-{v}")
                };
                format!("{eks}/{dir}/{name}/image_id")
            })
            .collect(),
            Family::Bottlerocket => {
                // Releases are tagged `v1.20.0` on GitHub but published as `1.20.0` in SSM;
                // upstream accepts both.
                let release = v.trim_start_matches('v');
                ["x86_64", "arm64"]
                    .iter()
                    .map(|arch| {
                        format!("/aws/service/bottlerocket/aws-k8s-{k8s}/{arch}/{release}/image_id")
                    })
                    .collect()
            }
            Family::Windows2019 | Family::Windows2022 => {
                let year = if self.family == Family::Windows2019 {
                    "2019"
                } else {
                    "2022"
                };
                vec![format!(
                    "/aws/service/ami-windows-latest/Windows_Server-{year}-English-Core-EKS_Optimized-{k8s}/image_id"
                )]
            }
        }
    }
}

/// `major.minor` of the API server (`1.31`). EKS reports minors like `31+`; the git version
/// (`v1.31.2-eks-1234`) is the fallback when major/minor are empty.
pub fn minor_version(info: &Info) -> Option<String> {
    let digits = |s: &str| -> String { s.chars().take_while(char::is_ascii_digit).collect() };
    let (major, minor) = (digits(&info.major), digits(&info.minor));
    if !major.is_empty() && !minor.is_empty() {
        return Some(format!("{major}.{minor}"));
    }
    let mut parts = info.git_version.trim_start_matches('v').split('.');
    let (major, minor) = (digits(parts.next()?), digits(parts.next()?));
    (!major.is_empty() && !minor.is_empty()).then(|| format!("{major}.{minor}"))
}

/// The cluster's Kubernetes version (`1.31`), asked of the API server: aliases resolve to the
/// images built for it.
pub async fn kubernetes_version(client: &kube::Client) -> Result<String, AwsError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(|e| AwsError::Transient(format!("kubernetes API GET /version: {e}")))?;
    minor_version(&info).ok_or_else(|| {
        AwsError::Fatal(format!(
            "the API server reports no usable version (major {:?}, minor {:?}, gitVersion {:?})",
            info.major, info.minor, info.git_version
        ))
    })
}

/// What `alias` terms need: SSM, the parameter-name prefix, and the Kubernetes version.
#[derive(Debug, Clone, Copy)]
pub struct AliasLookup<'a> {
    /// The SSM client.
    pub ssm: &'a Client,
    /// Prepended to every parameter name; empty in production (see
    /// [`super::AwsClients::with_ssm_parameter_prefix`]).
    pub prefix: &'a str,
    /// `major.minor` of the cluster.
    pub kubernetes_version: &'a str,
}

/// The result of looking up one alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasImages {
    /// Image ids found, in parameter order.
    pub image_ids: Vec<String>,
    /// Full names of the parameters that do not exist.
    pub missing: Vec<String>,
}

/// GetParameter for each of the alias's parameters. A missing parameter is not an error (a
/// family may not publish every architecture); anything else SSM answers is.
pub async fn lookup(lookup: &AliasLookup<'_>, alias: &Alias) -> Result<AliasImages, AwsError> {
    let mut out = AliasImages::default();
    for path in alias.parameters(lookup.kubernetes_version) {
        let name = format!("{}{path}", lookup.prefix);
        match lookup.ssm.get_parameter().name(&name).send().await {
            Ok(r) => match r.parameter().and_then(|p| p.value()) {
                Some(id) if !id.is_empty() => out.image_ids.push(id.to_owned()),
                _ => out.missing.push(name),
            },
            Err(e) if is_not_found(e.code()) => out.missing.push(name),
            Err(e) => return Err(from_sdk("GetParameter", e)),
        }
    }
    Ok(out)
}

fn is_not_found(code: Option<&str>) -> bool {
    matches!(code, Some("ParameterNotFound" | "ParameterVersionNotFound"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(s: &str) -> Alias {
        Alias::parse(s).expect("test alias parses")
    }

    #[test]
    fn al2023_uses_the_eks_parameters_per_architecture() {
        assert_eq!(
            alias("al2023@latest").parameters("1.31"),
            [
                "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id",
                "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/arm64/standard/recommended/image_id",
            ]
        );
        assert_eq!(
            alias("AL2023@v20240807").parameters("1.30"),
            [
                "/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/amazon-eks-node-al2023-x86_64-standard-1.30-v20240807/image_id",
                "/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/arm64/standard/amazon-eks-node-al2023-arm64-standard-1.30-v20240807/image_id",
            ]
        );
    }

    #[test]
    fn al2_bottlerocket_and_windows_paths_are_upstreams() {
        assert_eq!(
            alias("al2@latest").parameters("1.29"),
            [
                "/aws/service/eks/optimized-ami/1.29/amazon-linux-2/recommended/image_id",
                "/aws/service/eks/optimized-ami/1.29/amazon-linux-2-arm64/recommended/image_id",
            ]
        );
        assert_eq!(
            alias("al2@v20240807").parameters("1.29"),
            [
                "/aws/service/eks/optimized-ami/1.29/amazon-linux-2/amazon-eks-node-1.29-v20240807/image_id",
                "/aws/service/eks/optimized-ami/1.29/amazon-linux-2-arm64/amazon-eks-arm64-node-1.29-v20240807/image_id",
            ]
        );
        assert_eq!(
            alias("bottlerocket@v1.20.0").parameters("1.31"),
            [
                "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/1.20.0/image_id",
                "/aws/service/bottlerocket/aws-k8s-1.31/arm64/1.20.0/image_id",
            ]
        );
        assert_eq!(
            alias("bottlerocket@latest").parameters("1.31")[0],
            "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/latest/image_id"
        );
        assert_eq!(
            alias("windows2022@latest").parameters("1.31"),
            [
                "/aws/service/ami-windows-latest/Windows_Server-2022-English-Core-EKS_Optimized-1.31/image_id"
            ]
        );
    }

    #[test]
    fn bad_aliases_say_why() {
        assert_eq!(
            Alias::parse("al2023"),
            Err(AliasError::Malformed("al2023".into()))
        );
        assert_eq!(
            Alias::parse("ubuntu@latest"),
            Err(AliasError::UnknownFamily("ubuntu@latest".into()))
        );
        assert_eq!(
            Alias::parse("windows2019@v1"),
            Err(AliasError::PinnedWindows("windows2019@v1".into()))
        );
    }

    #[test]
    fn the_minor_version_tolerates_eks_suffixes() {
        let info = |major: &str, minor: &str, git: &str| Info {
            major: major.into(),
            minor: minor.into(),
            git_version: git.into(),
            ..Default::default()
        };
        assert_eq!(
            minor_version(&info("1", "31+", "v1.31.2-eks-7f9249a")),
            Some("1.31".into())
        );
        assert_eq!(
            minor_version(&info("", "", "v1.34.12")),
            Some("1.34".into())
        );
        assert_eq!(minor_version(&info("", "", "unknown")), None);
    }
}
