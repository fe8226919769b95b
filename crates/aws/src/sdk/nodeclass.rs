//! EC2NodeClass resolution: subnets, security groups and images by selector terms, reported
//! as `status` with conditions whose messages name the selector that matched nothing.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, Image};
use karpenter_api::ec2::{
    AmiSelectorTerm, EC2NodeClass, EC2NodeClassStatus, ResolvedAmi, ResolvedSecurityGroup,
    ResolvedSubnet, SelectorTerm,
};
use karpenter_api::v1::{Condition, NodeSelectorRequirementWithMinValues, Operator};
use karpenter_solver::labels;

use super::ami::{self, Alias, AliasLookup};
use super::error::{AwsError, from_sdk};

/// Condition types of an EC2NodeClass.
pub mod condition {
    /// Every other condition is true.
    pub const READY: &str = "Ready";
    /// At least one subnet matched.
    pub const SUBNETS_READY: &str = "SubnetsReady";
    /// At least one security group matched.
    pub const SECURITY_GROUPS_READY: &str = "SecurityGroupsReady";
    /// At least one image matched.
    pub const AMIS_READY: &str = "AMIsReady";
    /// The instance profile (or the role it is made for) exists.
    pub const INSTANCE_PROFILE_READY: &str = "InstanceProfileReady";
    /// Only while a NodePool using the class allows spot: the EC2 Spot service-linked role
    /// exists.
    pub const SPOT_SERVICE_LINKED_ROLE_READY: &str = "SpotServiceLinkedRoleReady";
}

/// EC2 filters for one selector term: `id` → the id filter, `name` → the name filter, each tag
/// → `tag:<key>` (or `tag-key` for the `*` wildcard, which matches any value).
fn term_filters(term: &SelectorTerm, id_filter: &str, name_filter: &str) -> Vec<Filter> {
    let mut out = Vec::new();
    if let Some(id) = &term.id {
        out.push(Filter::builder().name(id_filter).values(id).build());
    }
    if let Some(name) = &term.name {
        out.push(Filter::builder().name(name_filter).values(name).build());
    }
    out.extend(tag_filters(term.tags.as_ref()));
    out
}

fn tag_filters(tags: Option<&BTreeMap<String, String>>) -> Vec<Filter> {
    tags.into_iter()
        .flatten()
        .map(|(k, v)| {
            if v == "*" {
                Filter::builder().name("tag-key").values(k).build()
            } else {
                Filter::builder().name(format!("tag:{k}")).values(v).build()
            }
        })
        .collect()
}

/// A selector term as a user wrote it, for messages: `{tags: {a: b}}`, `{id: subnet-1}`.
pub fn describe_term(term: &SelectorTerm) -> String {
    let mut parts = Vec::new();
    if let Some(id) = &term.id {
        parts.push(format!("id: {id}"));
    }
    if let Some(name) = &term.name {
        parts.push(format!("name: {name}"));
    }
    if let Some(tags) = &term.tags {
        let t: Vec<String> = tags.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        parts.push(format!("tags: {{{}}}", t.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

fn describe_terms(terms: &[SelectorTerm]) -> String {
    let t: Vec<String> = terms.iter().map(describe_term).collect();
    format!("[{}]", t.join(", "))
}

/// Subnets matching any term (fields within a term are ANDed), sorted by id.
pub async fn resolve_subnets(
    client: &Client,
    terms: &[SelectorTerm],
) -> Result<Vec<ResolvedSubnet>, AwsError> {
    let mut found: BTreeMap<String, ResolvedSubnet> = BTreeMap::new();
    for term in terms {
        let mut token = None;
        loop {
            let out = client
                .describe_subnets()
                .set_filters(Some(term_filters(term, "subnet-id", "tag:Name")))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeSubnets", e))?;
            for s in out.subnets() {
                let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) else {
                    continue;
                };
                found.insert(
                    id.to_owned(),
                    ResolvedSubnet {
                        id: id.to_owned(),
                        zone: zone.to_owned(),
                        zone_id: s.availability_zone_id().map(str::to_owned),
                    },
                );
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Security groups matching any term, sorted by id.
pub async fn resolve_security_groups(
    client: &Client,
    terms: &[SelectorTerm],
) -> Result<Vec<ResolvedSecurityGroup>, AwsError> {
    let mut found: BTreeMap<String, ResolvedSecurityGroup> = BTreeMap::new();
    for term in terms {
        let mut token = None;
        loop {
            let out = client
                .describe_security_groups()
                .set_filters(Some(term_filters(term, "group-id", "group-name")))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeSecurityGroups", e))?;
            for g in out.security_groups() {
                let Some(id) = g.group_id() else { continue };
                found.insert(
                    id.to_owned(),
                    ResolvedSecurityGroup {
                        id: id.to_owned(),
                        name: g.group_name().map(str::to_owned),
                    },
                );
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Kubernetes architecture of an EC2 image architecture (`x86_64` → `amd64`); others (`i386`,
/// the `_mac` ones) are kept as EC2 names them, which no instance type's label matches.
pub fn kubernetes_arch(ec2_arch: &str) -> &str {
    match ec2_arch {
        "x86_64" => "amd64",
        other => other,
    }
}

/// A DescribeImages answer as status: id, name, and the architecture requirement instance
/// types must meet to boot it.
fn resolved_ami(image: &Image) -> Option<(String, ResolvedAmi)> {
    let id = image.image_id()?;
    let requirements = image
        .architecture()
        .map(|a| NodeSelectorRequirementWithMinValues {
            key: labels::ARCH.to_owned(),
            operator: Operator::In,
            values: vec![kubernetes_arch(a.as_str()).to_owned()],
            min_values: None,
        })
        .into_iter()
        .collect();
    let ami = ResolvedAmi {
        id: id.to_owned(),
        name: image.name().map(str::to_owned),
        requirements,
    };
    Some((image.creation_date().unwrap_or_default().to_owned(), ami))
}

/// The architecture an image requires (`None`: any).
pub fn ami_arch(ami: &ResolvedAmi) -> Option<&str> {
    ami.requirements
        .iter()
        .find(|r| r.key == labels::ARCH && r.operator == Operator::In)
        .and_then(|r| r.values.first())
        .map(String::as_str)
}

async fn describe_images(
    req: aws_sdk_ec2::operation::describe_images::builders::DescribeImagesFluentBuilder,
    found: &mut BTreeMap<String, (String, ResolvedAmi)>,
) -> Result<usize, AwsError> {
    let out = req
        .send()
        .await
        .map_err(|e| from_sdk("DescribeImages", e))?;
    let mut n = 0;
    for (created, ami) in out.images().iter().filter_map(resolved_ami) {
        n += 1;
        found.insert(ami.id.clone(), (created, ami));
    }
    Ok(n)
}

/// Images matching any term given by id, name, tags or owner, or by an `alias` (through
/// `aliases`' SSM parameters; without `aliases` an alias is reported unresolved). Newest first
/// (then by id), like upstream, so the first image of an architecture is the one to launch.
/// The second value says, per term that found nothing it could, why.
pub async fn resolve_amis(
    client: &Client,
    terms: &[AmiSelectorTerm],
    aliases: Option<&AliasLookup<'_>>,
) -> Result<(Vec<ResolvedAmi>, Vec<String>), AwsError> {
    let mut found: BTreeMap<String, (String, ResolvedAmi)> = BTreeMap::new();
    let mut problems = Vec::new();
    for term in terms {
        if let Some(alias) = &term.alias {
            if let Some(problem) = resolve_alias(client, alias, aliases, &mut found).await? {
                problems.push(problem);
            }
            continue;
        }
        let mut req = client.describe_images();
        if let Some(id) = &term.id {
            req = req.image_ids(id);
        }
        if let Some(owner) = &term.owner {
            req = req.owners(owner);
        }
        if let Some(name) = &term.name {
            req = req.filters(Filter::builder().name("name").values(name).build());
        }
        for f in tag_filters(term.tags.as_ref()) {
            req = req.filters(f);
        }
        describe_images(req, &mut found).await?;
    }
    let mut amis: Vec<(String, ResolvedAmi)> = found.into_values().collect();
    amis.sort_by(|(da, a), (db, b)| db.cmp(da).then_with(|| a.id.cmp(&b.id)));
    Ok((amis.into_iter().map(|(_, a)| a).collect(), problems))
}

/// One alias term: its SSM parameters, then DescribeImages on the ids they hold (for the
/// architecture). `Some(why)` when it yields no image.
async fn resolve_alias(
    client: &Client,
    alias: &str,
    aliases: Option<&AliasLookup<'_>>,
    found: &mut BTreeMap<String, (String, ResolvedAmi)>,
) -> Result<Option<String>, AwsError> {
    let parsed = match Alias::parse(alias) {
        Ok(a) => a,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let Some(lookup) = aliases else {
        return Ok(Some(format!(
            "alias {alias} needs SSM and the cluster's Kubernetes version, which this caller \
             did not provide"
        )));
    };
    let images = ami::lookup(lookup, &parsed).await?;
    if images.image_ids.is_empty() {
        return Ok(Some(format!(
            "alias {alias} resolves to no image for Kubernetes {}: SSM parameter {} not found",
            lookup.kubernetes_version,
            images.missing.join(" and ")
        )));
    }
    // A filter, not ImageIds: EC2 fails the whole call on an id it does not know, and a
    // parameter may briefly point at an image that is not public yet.
    let req = client.describe_images().filters(
        Filter::builder()
            .name("image-id")
            .set_values(Some(images.image_ids.clone()))
            .build(),
    );
    if describe_images(req, found).await? == 0 {
        return Ok(Some(format!(
            "alias {alias}: SSM names image(s) {} for Kubernetes {}, but DescribeImages finds none \
             of them",
            images.image_ids.join(", "),
            lookup.kubernetes_version
        )));
    }
    Ok(None)
}

/// A condition: `True` with the type as reason, or `False` with `reason` and `message`.
pub fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: Some(if ok {
            type_.to_owned()
        } else {
            reason.to_owned()
        }),
        message: (!ok).then_some(message),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Resolves the EC2NodeClass and computes its status. A selector that matches nothing is not
/// an error: it is a `False` condition whose message names the selector and what to fix.
/// `aliases` resolves `alias` image terms (without it they are `AMIsReady=False`).
pub async fn resolve(
    client: &Client,
    nc: &EC2NodeClass,
    aliases: Option<&AliasLookup<'_>>,
) -> Result<EC2NodeClassStatus, AwsError> {
    let spec = &nc.spec;
    let subnets = resolve_subnets(client, &spec.subnet_selector_terms).await?;
    let security_groups =
        resolve_security_groups(client, &spec.security_group_selector_terms).await?;
    let (amis, problems) = resolve_amis(client, &spec.ami_selector_terms, aliases).await?;
    let mut conditions = vec![
        condition(
            condition::SUBNETS_READY,
            !subnets.is_empty(),
            "SubnetsNotFound",
            format!(
                "no subnet matches spec.subnetSelectorTerms {}; tag the cluster's subnets with \
                 those tags or change the selector",
                describe_terms(&spec.subnet_selector_terms)
            ),
        ),
        condition(
            condition::SECURITY_GROUPS_READY,
            !security_groups.is_empty(),
            "SecurityGroupsNotFound",
            format!(
                "no security group matches spec.securityGroupSelectorTerms {}; tag the node \
                 security group with those tags or change the selector",
                describe_terms(&spec.security_group_selector_terms)
            ),
        ),
    ];
    let ami_message = if spec.ami_selector_terms.is_empty() {
        "spec.amiSelectorTerms is empty; select an image by id, name or tags".to_owned()
    } else if !problems.is_empty() {
        problems.join("; ")
    } else {
        "no image matches spec.amiSelectorTerms; check the ids, names, tags and owners".to_owned()
    };
    conditions.push(condition(
        condition::AMIS_READY,
        !amis.is_empty(),
        "AMINotFound",
        ami_message,
    ));
    // Only asked when the class selects reservations: a class without terms makes no call.
    let capacity_reservations = if spec.capacity_reservation_selector_terms.is_empty() {
        Vec::new()
    } else {
        super::reservations::resolve_capacity_reservations(
            client,
            &spec.capacity_reservation_selector_terms,
        )
        .await?
    };
    set_ready(&mut conditions);
    Ok(EC2NodeClassStatus {
        subnets,
        security_groups,
        amis,
        capacity_reservations,
        instance_profile: spec.instance_profile.clone(),
        conditions,
    })
}

/// (Re)computes the `Ready` condition from every other one: `True` when all are, otherwise
/// `False` with their messages joined.
pub fn set_ready(conditions: &mut Vec<Condition>) {
    conditions.retain(|c| c.type_ != condition::READY);
    let not_ready: Vec<String> = conditions
        .iter()
        .filter(|c| !c.is_true())
        .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default()))
        .collect();
    conditions.push(condition(
        condition::READY,
        not_ready.is_empty(),
        "NotReady",
        not_ready.join("; "),
    ));
}

/// The message of the status's `Ready` condition when it is not true.
pub fn not_ready_reason(status: &EC2NodeClassStatus) -> Option<String> {
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY);
    match ready {
        Some(c) if c.is_true() => None,
        Some(c) => Some(c.message.clone().unwrap_or_else(|| "not ready".into())),
        None => Some("not resolved yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_described_as_written() {
        let term = SelectorTerm {
            tags: Some(BTreeMap::from([(
                "kubernetes.io/cluster/demo".into(),
                "*".into(),
            )])),
            id: None,
            name: None,
        };
        assert_eq!(
            describe_term(&term),
            "{tags: {kubernetes.io/cluster/demo: *}}"
        );
        let f = term_filters(&term, "subnet-id", "tag:Name");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), Some("tag-key"));
        assert_eq!(f[0].values(), ["kubernetes.io/cluster/demo"]);
        let by_id = SelectorTerm {
            id: Some("sg-1".into()),
            ..Default::default()
        };
        let f = term_filters(&by_id, "group-id", "group-name");
        assert_eq!(f[0].name(), Some("group-id"));
    }

    #[test]
    fn images_require_their_architecture() {
        let image = Image::builder()
            .image_id("ami-1")
            .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
            .creation_date("2024-08-07T00:00:00.000Z")
            .build();
        let (created, ami) = resolved_ami(&image).expect("an image with an id resolves");
        assert_eq!(created, "2024-08-07T00:00:00.000Z");
        assert_eq!(ami_arch(&ami), Some("amd64"));
        assert_eq!(kubernetes_arch("arm64"), "arm64");
        let no_arch = Image::builder().image_id("ami-2").build();
        let (_, ami) = resolved_ami(&no_arch).expect("an image with an id resolves");
        assert_eq!(ami_arch(&ami), None, "no architecture: fits any type");
    }
}
