//! AL2: a shell script calling the EKS AMI's `/etc/eks/bootstrap.sh`, as the last part of a
//! MIME document after the user's parts (upstream's order: the user's script may prepare the
//! node before kubelet starts).

use std::collections::BTreeMap;

use super::mime::{self, Part};
use super::{NodeBootstrap, UserDataError, node_labels_flag};

/// Content type of the shell script parts.
pub const SHELL_CONTENT_TYPE: &str = "text/x-shellscript; charset=\"us-ascii\"";

/// Single-quotes `s` for bash (`'` becomes `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn map_flag(name: &str, m: &BTreeMap<String, String>, sep: &str) -> Option<String> {
    (!m.is_empty()).then(|| {
        let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}{sep}{v}")).collect();
        format!("--{name}={}", pairs.join(","))
    })
}

/// The kubelet flags: labels, taints, max pods, reserved resources, eviction thresholds.
pub fn kubelet_extra_args(b: &NodeBootstrap<'_>) -> String {
    let k = &b.kubelet;
    let taints: Vec<String> = b.register_taints().iter().map(|t| t.flag()).collect();
    let mut args: Vec<String> = node_labels_flag(b).into_iter().collect();
    args.push(format!("--register-with-taints={}", taints.join(",")));
    args.extend(k.max_pods.map(|n| format!("--max-pods={n}")));
    args.extend(map_flag("kube-reserved", &k.kube_reserved, "="));
    args.extend(map_flag("system-reserved", &k.system_reserved, "="));
    args.extend(map_flag("eviction-hard", &k.eviction_hard, "<"));
    args.extend(map_flag("eviction-soft", &k.eviction_soft, "<"));
    args.join(" ")
}

/// The bootstrap script.
pub fn script(b: &NodeBootstrap<'_>) -> String {
    let c = b.cluster;
    let mut cmd = vec![
        format!("/etc/eks/bootstrap.sh {}", shell_quote(&c.name)),
        format!("--apiserver-endpoint {}", shell_quote(&c.endpoint)),
        format!("--b64-cluster-ca {}", shell_quote(&c.ca_bundle)),
        // bootstrap.sh would otherwise compute its own max pods and override ours.
        "--use-max-pods false".to_owned(),
    ];
    if let Some(dns) = b.kubelet.cluster_dns.first() {
        cmd.push(format!("--dns-cluster-ip {}", shell_quote(dns)));
    }
    cmd.push(format!(
        "--kubelet-extra-args {}",
        shell_quote(&kubelet_extra_args(b))
    ));
    format!(
        "#!/bin/bash -xe\n\
         exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n{}\n",
        cmd.join(" \\\n")
    )
}

/// The MIME document: the user's parts, then the bootstrap script.
pub fn render(b: &NodeBootstrap<'_>) -> Result<String, UserDataError> {
    let mut parts = mime::user_parts(b.user_data, SHELL_CONTENT_TYPE)?;
    parts.push(Part::new(SHELL_CONTENT_TYPE, &script(b)));
    Ok(mime::write(&parts))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{bootstrap, cluster};
    use super::super::{ImageFamily, mime};
    use super::*;

    #[test]
    fn the_script_calls_bootstrap_sh_with_the_exact_flags() -> Result<(), UserDataError> {
        let c = cluster();
        let b = bootstrap(&c, ImageFamily::Al2, Some("echo first"));
        let doc = b.render()?;
        let parts = mime::user_parts(Some(&doc), "x")?;
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, "echo first\n");
        let script = &parts[1].body;
        assert!(script.starts_with("#!/bin/bash -xe\n"), "{script}");
        let expected = format!(
            "/etc/eks/bootstrap.sh 'demo' \\\n--apiserver-endpoint 'https://api.demo.example:443' \\\n\
             --b64-cluster-ca '{}' \\\n--use-max-pods false \\\n--dns-cluster-ip '10.100.0.10' \\\n\
             --kubelet-extra-args '--node-labels=karpenter.sh/nodepool=default,\
             node.kubernetes.io/purpose=batch,team=a \
             --register-with-taints=gpu=true:NoSchedule,karpenter.sh/unregistered:NoExecute,\
             startup:NoExecute --max-pods=29 --kube-reserved=cpu=100m \
             --eviction-hard=memory.available<5%'\n",
            c.ca_bundle
        );
        assert!(script.ends_with(&expected), "{script}\n---\n{expected}");
        Ok(())
    }

    #[test]
    fn quotes_cannot_escape() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
