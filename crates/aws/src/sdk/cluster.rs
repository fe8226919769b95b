//! Where the nodes' bootstrap finds the API server: the `--cluster-endpoint` /
//! `--cluster-ca-bundle` flags, else the controller's own kube client configuration (upstream
//! asks EKS DescribeCluster; this crate does not call EKS).

use crate::userdata::{ClusterInfo, UserDataError, ca_bundle_from_der};

/// Why the cluster's endpoint or CA cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// The controller runs in a pod and no endpoint flag was given.
    #[error(
        "--cloud-provider aws needs the API server URL nodes join (--cluster-endpoint or \
         CLUSTER_ENDPOINT): the controller's own ({0}) is the in-cluster Service address, which a \
         new node cannot reach"
    )]
    InClusterEndpoint(String),
    /// No CA flag and none in the kube configuration.
    #[error(
        "--cloud-provider aws needs the cluster CA bundle nodes trust (--cluster-ca-bundle or \
         CLUSTER_CA_BUNDLE, base64 PEM): the kube configuration has no certificate-authority data"
    )]
    NoCaBundle,
    /// The endpoint or CA is unusable.
    #[error(transparent)]
    Invalid(#[from] UserDataError),
}

/// The flags, as given (empty counts as unset).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterFlags<'a> {
    /// `--cluster-endpoint`.
    pub endpoint: Option<&'a str>,
    /// `--cluster-ca-bundle`.
    pub ca_bundle: Option<&'a str>,
    /// `--cluster-cidr`.
    pub service_cidr: Option<&'a str>,
}

fn set(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

impl ClusterFlags<'_> {
    /// Checks the flags that were given, before anything is contacted.
    pub fn validate(&self, cluster: &str) -> Result<(), ClusterConfigError> {
        let (endpoint, ca) = (set(self.endpoint), set(self.ca_bundle));
        if endpoint.is_some() || ca.is_some() {
            // Stand-ins for whichever half the kube configuration gives later.
            ClusterInfo::new(
                cluster,
                endpoint.unwrap_or("https://kubeconfig"),
                ca.unwrap_or("Cg=="),
            )?;
        }
        Ok(())
    }

    /// The cluster the nodes join: the flags, else `config`'s URL and root certificates.
    pub fn resolve(
        &self,
        cluster: &str,
        config: &kube::Config,
    ) -> Result<ClusterInfo, ClusterConfigError> {
        let endpoint = match set(self.endpoint) {
            Some(e) => e.to_owned(),
            None => {
                let url = config.cluster_url.to_string();
                let host = config.cluster_url.host().unwrap_or_default();
                // In a pod kube-rs talks to the `kubernetes` Service (its ClusterIP or
                // kubernetes.default.svc); a booting node has no route to either.
                let in_cluster = config.root_cert_file.is_some()
                    || host.ends_with(".svc")
                    || host.ends_with(".svc.cluster.local")
                    || std::env::var("KUBERNETES_SERVICE_HOST").is_ok_and(|h| h == host);
                if in_cluster {
                    return Err(ClusterConfigError::InClusterEndpoint(url));
                }
                url
            }
        };
        let ca = match set(self.ca_bundle) {
            Some(c) => c.to_owned(),
            None => config
                .root_cert
                .as_deref()
                .filter(|certs| !certs.is_empty())
                .map(ca_bundle_from_der)
                .ok_or(ClusterConfigError::NoCaBundle)?,
        };
        Ok(ClusterInfo::new(cluster, &endpoint, &ca)?
            .with_service_cidr(set(self.service_cidr).map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(url: &str, ca: Option<Vec<Vec<u8>>>) -> Result<kube::Config, String> {
        let mut c = kube::Config::new(url.parse().map_err(|e| format!("{e}"))?);
        c.root_cert = ca;
        Ok(c)
    }

    #[test]
    fn endpoint_and_ca_come_from_the_kube_config_unless_flagged() -> Result<(), String> {
        let config = kubeconfig("https://10.0.0.1:6443", Some(vec![vec![1, 2, 3]]))?;
        let none = ClusterFlags::default();
        let info = none.resolve("demo", &config).map_err(|e| e.to_string())?;
        assert_eq!(info.endpoint, "https://10.0.0.1:6443");
        assert_eq!(info.ca_bundle, ca_bundle_from_der(&[vec![1, 2, 3]]));
        assert_eq!(info.service_cidr, None);
        let flags = ClusterFlags {
            endpoint: Some("https://api.example"),
            ca_bundle: Some("UEVN"),
            service_cidr: Some("10.100.0.0/16"),
        };
        let info = flags.resolve("demo", &config).map_err(|e| e.to_string())?;
        assert_eq!(info.endpoint, "https://api.example");
        assert_eq!(info.ca_bundle, "UEVN");
        assert_eq!(info.service_cidr.as_deref(), Some("10.100.0.0/16"));
        Ok(())
    }

    #[test]
    fn unusable_endpoints_and_missing_cas_name_the_flag() -> Result<(), String> {
        let none = ClusterFlags::default();
        let err = |f: &ClusterFlags<'_>, c: &kube::Config| {
            f.resolve("demo", c)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let no_ca = kubeconfig("https://10.0.0.1:6443", None)?;
        assert!(err(&none, &no_ca).contains("--cluster-ca-bundle"));
        let plain = kubeconfig("http://127.0.0.1:8080", Some(vec![vec![1]]))?;
        assert!(err(&none, &plain).contains("--cluster-endpoint"));
        let svc = kubeconfig("https://kubernetes.default.svc", Some(vec![vec![1]]))?;
        assert!(err(&none, &svc).contains("--cluster-endpoint"));
        let http = ClusterFlags {
            endpoint: Some("http://api.example"),
            ..Default::default()
        };
        let msg = http.validate("demo").err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("--cluster-endpoint")));
        assert!(ClusterFlags::default().validate("demo").is_ok());
        Ok(())
    }
}
