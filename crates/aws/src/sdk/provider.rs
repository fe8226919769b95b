//! The EC2 provider: instance types from DescribeInstanceTypes/-Offerings, launch through a
//! launch template and an `instant` CreateFleet, terminate, get and list by tag.
//!
//! Its async methods have the shape of `karpenter_providers::CloudProvider` (create, delete,
//! get, list, instance_types); see crates/aws/README.md for the mapping.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::DateTime;
use aws_sdk_ec2::types::{Filter, Instance, LocationType};
use karpenter_api::ec2::{EC2NodeClass, EC2NodeClassStatus};
use karpenter_api::labels::CAPACITY_TYPE_LABEL;
use karpenter_api::v1::NodeClaim;
use karpenter_solver::InstanceType;
use karpenter_solver::labels::CAPACITY_TYPE_RESERVED;

use super::convert::from_ec2;
use super::error::{AwsError, from_sdk};
use super::instance::{LIVE_STATES, instance_view, is_live};
use super::launch::{self, Candidate, NODECLAIM_TAG, NODEPOOL_TAG};
use super::nodeclass::not_ready_reason;
use super::reserved::{self, LaunchMode, ReservationAvailability, TemplateReservation};
use super::template;
use crate::catalog::StaticCatalog;
use crate::userdata::ClusterInfo;

mod fleet;

/// How long an offering that failed with insufficient capacity is skipped (upstream: 3 min).
pub const UNAVAILABLE_TTL: Duration = Duration::from_secs(180);

/// The EC2 provider for one cluster.
#[derive(Debug)]
pub struct Ec2Provider {
    client: Client,
    /// Name, API server and CA the nodes' user data points at.
    cluster: ClusterInfo,
    region: String,
    /// (instance type, zone, capacity type) → unavailable until.
    unavailable: Mutex<HashMap<(String, String, String), Instant>>,
    /// Instances each capacity reservation can still take.
    reservations: ReservationAvailability,
    /// Targeted with the `ReservedCapacity` gate (the default), open without.
    launch_mode: LaunchMode,
}

/// Instance ids per DescribeInstances call when describing many (EC2 takes up to 200 values per
/// filter; half of that leaves room).
pub const DESCRIBE_BATCH: usize = 100;

impl Ec2Provider {
    /// A provider for `cluster` in `region` using `client` (build it with
    /// `aws_config::defaults(...)`; `AWS_ENDPOINT_URL` or `.endpoint_url()` points it at moto).
    /// Launched nodes bootstrap against `cluster`'s endpoint and CA.
    pub fn new(client: Client, cluster: ClusterInfo, region: &str) -> Self {
        Self {
            client,
            cluster,
            region: region.to_owned(),
            unavailable: Mutex::new(HashMap::new()),
            reservations: ReservationAvailability::default(),
            launch_mode: LaunchMode::Targeted,
        }
    }

    /// Feature gate `ReservedCapacity` (on by default): off, launch templates say nothing about
    /// capacity reservations (upstream's open launch mode).
    pub fn with_reserved_capacity(mut self, on: bool) -> Self {
        self.launch_mode = if on {
            LaunchMode::Targeted
        } else {
            LaunchMode::Open
        };
        self
    }

    /// How many instances each capacity reservation can still take (synced from the
    /// NodeClass's resolved reservations; launches and refusals update it).
    pub fn reservation_availability(&self) -> &ReservationAvailability {
        &self.reservations
    }

    /// The cluster name instances are tagged with.
    pub fn cluster(&self) -> &str {
        &self.cluster.name
    }

    /// The cluster the nodes join.
    pub fn cluster_info(&self) -> &ClusterInfo {
        &self.cluster
    }

    /// The provider's name, as `CloudProvider::name` reports it.
    pub fn name(&self) -> &str {
        "aws"
    }

    /// Resolves an EC2NodeClass (subnets, security groups, images) into its status. Image
    /// aliases need SSM and the Kubernetes version, which only [`super::AwsCloudProvider`] and
    /// the status controller have: here they are reported unresolved.
    pub async fn resolve_node_class(
        &self,
        nc: &EC2NodeClass,
    ) -> Result<EC2NodeClassStatus, AwsError> {
        super::nodeclass::resolve(&self.client, nc, None).await
    }

    /// Instance types offered in the region: DescribeInstanceTypes + DescribeInstanceTypeOfferings,
    /// spot prices from DescribeSpotPriceHistory, on-demand prices from the embedded table (the
    /// Pricing API has no regional endpoint and moto does not implement it). Types without a
    /// known on-demand price are left out: they could not be compared.
    pub async fn instance_types(&self) -> Result<Vec<InstanceType>, AwsError> {
        let mut infos = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .describe_instance_types()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeInstanceTypes", e))?;
            infos.extend(out.instance_types().iter().filter_map(from_ec2));
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let zones = self.offering_zones().await?;
        let spot = self.spot_prices().await.unwrap_or_else(|e| {
            // Spot prices are an optimisation; the documented ratio is the fallback.
            tracing::warn!(error = %e, "DescribeSpotPriceHistory failed; estimating spot prices");
            BTreeMap::new()
        });
        let prices = StaticCatalog::embedded().map_err(|e| AwsError::Fatal(e.to_string()))?;
        let mut out: Vec<InstanceType> = infos
            .iter()
            .filter_map(|info| {
                let zones = zones.get(&info.name)?;
                let od = prices.on_demand_price(&info.name)?;
                Some(info.to_instance_type(&self.region, zones, od, |z| {
                    spot.get(&(info.name.clone(), z.to_owned())).copied()
                }))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        self.apply_unavailable(&mut out);
        Ok(out)
    }

    async fn offering_zones(&self) -> Result<BTreeMap<String, Vec<String>>, AwsError> {
        let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .describe_instance_type_offerings()
                .location_type(LocationType::AvailabilityZone)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeInstanceTypeOfferings", e))?;
            for o in out.instance_type_offerings() {
                if let (Some(it), Some(zone)) = (o.instance_type(), o.location()) {
                    zones
                        .entry(it.as_str().to_owned())
                        .or_default()
                        .push(zone.to_owned());
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for z in zones.values_mut() {
            z.sort();
            z.dedup();
        }
        Ok(zones)
    }

    /// Latest Linux spot price per (instance type, zone).
    async fn spot_prices(&self) -> Result<BTreeMap<(String, String), f64>, AwsError> {
        let out = self
            .client
            .describe_spot_price_history()
            .product_descriptions("Linux/UNIX")
            .start_time(DateTime::from(SystemTime::now()))
            .send()
            .await
            .map_err(|e| from_sdk("DescribeSpotPriceHistory", e))?;
        let mut latest: BTreeMap<(String, String), (DateTime, f64)> = BTreeMap::new();
        for h in out.spot_price_history() {
            let (Some(it), Some(zone), Some(price)) =
                (h.instance_type(), h.availability_zone(), h.spot_price())
            else {
                continue;
            };
            let Ok(price) = price.parse::<f64>() else {
                continue;
            };
            let at = h.timestamp().copied().unwrap_or(DateTime::from_secs(0));
            let key = (it.as_str().to_owned(), zone.to_owned());
            if latest.get(&key).is_none_or(|(t, _)| *t <= at) {
                latest.insert(key, (at, price));
            }
        }
        Ok(latest.into_iter().map(|(k, (_, p))| (k, p)).collect())
    }

    /// Marks offerings that recently failed with insufficient capacity unavailable (for
    /// callers that cache [`Ec2Provider::instance_types`]).
    pub fn apply_unavailable(&self, its: &mut [InstanceType]) {
        let now = Instant::now();
        let mut cache = self.unavailable.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, until| *until > now);
        for it in its {
            for o in &mut it.offerings {
                let key = (it.name.clone(), o.zone.clone(), o.capacity_type.clone());
                if cache.contains_key(&key) {
                    o.available = false;
                }
            }
        }
    }

    fn mark_unavailable(&self, tried: &[launch::Override], capacity_type: &str) {
        let until = Instant::now() + UNAVAILABLE_TTL;
        let mut cache = self.unavailable.lock().unwrap_or_else(|e| e.into_inner());
        for o in tried {
            cache.insert(
                (
                    o.instance_type.clone(),
                    o.zone.clone(),
                    capacity_type.to_owned(),
                ),
                until,
            );
        }
    }

    /// Launches one instance for the NodeClaim: the cheapest compatible offerings (of the
    /// capacity types allowed, reserved first, then spot, then on-demand) as ≤ 60 CreateFleet
    /// overrides into the NodeClass's subnets, from a launch template with its image and
    /// security groups. A reserved launch targets one capacity reservation (its launch template
    /// names it) and labels the NodeClaim with it. Idempotent: an instance already tagged
    /// with this NodeClaim is returned instead of launching another.
    pub async fn create(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
        status: &EC2NodeClassStatus,
        instance_types: &[InstanceType],
    ) -> Result<NodeClaim, AwsError> {
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = self.find_by_nodeclaim(&claim_name).await? {
            return Ok(instance_view(&existing, instance_types));
        }
        if let Some(reason) = not_ready_reason(status) {
            return Err(AwsError::NodeClassNotReady(reason));
        }
        let requirements = launch::claim_requirements(claim).map_err(AwsError::Fatal)?;
        let requests = launch::claim_requests(claim).map_err(AwsError::Fatal)?;
        let mut candidates: Vec<Candidate> = launch::candidates(
            instance_types,
            &requirements,
            &requests,
            &status.capacity_reservations,
        );
        // A type no resolved image can boot is no candidate (e.g. the alias publishes no arm64
        // image), so the cheapest bootable ones fill the override budget.
        candidates.retain(|c| {
            let arch = launch::arch_of(instance_types, &c.instance_type);
            launch::image_for(&status.amis, arch).is_some()
        });
        let Some(capacity_type) = launch::capacity_type(&candidates) else {
            return Err(AwsError::InsufficientCapacity(format!(
                "no available offering satisfies NodeClaim {claim_name}'s requirements and \
                 requests with a resolved image for its architecture"
            )));
        };
        let reservation = if capacity_type == CAPACITY_TYPE_RESERVED {
            reserved::narrow_to_one_reservation(&mut candidates, &status.capacity_reservations)
        } else {
            None
        };
        // The node carries its reservation's labels from the start (kubelet's node labels).
        let mut claim = claim.clone();
        if let Some(r) = &reservation {
            let labels = claim.metadata.labels.get_or_insert_default();
            labels.extend(r.labels().map(|(k, v)| (k.to_owned(), v)));
        }
        let claim = &claim;
        let subnets: Vec<(String, String)> = status
            .subnets
            .iter()
            .map(|s| (s.id.clone(), s.zone.clone()))
            .collect();
        let overrides = launch::overrides(&candidates, capacity_type, &subnets);
        if overrides.is_empty() {
            return Err(AwsError::InsufficientCapacity(format!(
                "no {capacity_type} offering of NodeClaim {claim_name} is in a zone with a selected subnet"
            )));
        }
        // One launch template per image: an alias resolves to an x86 and an arm64 image, and
        // each instance type must boot the one built for its architecture.
        let by_image = launch::overrides_by_image(&overrides, instance_types, &status.amis);
        let node_class_name = node_class.metadata.name.clone().unwrap_or_default();
        let tags = launch::instance_tags(
            &self.cluster.name,
            claim,
            &node_class_name,
            &node_class.spec.tags,
        );
        let family = template::family(node_class)?;
        // Within an image, one template per max-pods value: kubelet's maxPods is in the user
        // data. Identical user data (same labels, taints, pods) reuses the template.
        let mut groups: Vec<(String, Option<i64>, Vec<launch::Override>)> = Vec::new();
        for (image, group) in by_image {
            for (pods, g) in launch::overrides_by_max_pods(&group, instance_types) {
                groups.push((image.clone(), pods, g));
            }
        }
        groups.sort_by(|a, b| a.2[0].price.total_cmp(&b.2[0].price));
        // CreateFleet takes at most 50 configs; the dropped ones are the most expensive.
        groups.truncate(launch::MAX_LAUNCH_TEMPLATE_CONFIGS);
        let mut configs = Vec::with_capacity(groups.len());
        for (image, pods, group) in groups {
            let bootstrap = template::bootstrap(
                &self.cluster,
                family,
                claim,
                node_class,
                capacity_type,
                pods,
            );
            let user_data = bootstrap
                .render_base64()
                .map_err(|e| AwsError::NodeClassNotReady(e.to_string()))?;
            let name = template::ensure(
                &self.client,
                &self.cluster.name,
                node_class,
                status,
                &image,
                &user_data,
                TemplateReservation {
                    mode: self.launch_mode,
                    target: reservation.as_ref(),
                },
            )
            .await?;
            configs.push((name, group));
        }
        let instance_id = self
            .create_fleet(&configs, capacity_type, reservation.as_ref(), &tags)
            .await?;
        let instance = self.describe(&instance_id).await?;
        let mut view = instance_view(&instance, instance_types);
        // The NodeClaim keeps its own labels and spec; the instance view adds what launching
        // decided (type, zone, capacity type) and the providerID.
        let mut labels = view.metadata.labels.take().unwrap_or_default();
        labels.extend(claim.metadata.labels.clone().unwrap_or_default());
        if reservation.is_some() {
            // What was asked for, whether or not DescribeInstances already reports it.
            labels.insert(
                CAPACITY_TYPE_LABEL.to_owned(),
                CAPACITY_TYPE_RESERVED.to_owned(),
            );
        }
        let mut out = claim.clone();
        out.metadata.labels = Some(labels);
        let mut st = claim.status.clone().unwrap_or_default();
        let inst = view.status.take().unwrap_or_default();
        st.provider_id = inst.provider_id;
        st.image_id = inst.image_id;
        st.capacity = inst.capacity;
        st.allocatable = inst.allocatable;
        out.status = Some(st);
        Ok(out)
    }

    async fn describe_filtered(
        &self,
        filters: Vec<Filter>,
        ids: Vec<String>,
    ) -> Result<Vec<Instance>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_instance_ids((!ids.is_empty()).then(|| ids.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeInstances", e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .cloned(),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The live instances among `ids`, by instance id: one DescribeInstances per
    /// [`DESCRIBE_BATCH`] ids. The ids go in an `instance-id` filter rather than `InstanceIds`,
    /// so an id that no longer exists is simply absent instead of failing the whole call.
    pub async fn describe_many(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Instance>, AwsError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(DESCRIBE_BATCH) {
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            for i in self.describe_filtered(vec![filter], Vec::new()).await? {
                if is_live(&i)
                    && let Some(id) = i.instance_id()
                {
                    out.insert(id.to_owned(), i);
                }
            }
        }
        Ok(out)
    }

    /// The live instance with this id (`NodeClaimNotFound` when it does not exist or is
    /// terminated).
    pub async fn describe(&self, instance_id: &str) -> Result<Instance, AwsError> {
        let found = self
            .describe_filtered(Vec::new(), vec![instance_id.to_owned()])
            .await?;
        found
            .into_iter()
            .find(is_live)
            .ok_or_else(|| AwsError::NodeClaimNotFound(format!("instance {instance_id}")))
    }

    async fn find_by_nodeclaim(&self, claim: &str) -> Result<Option<Instance>, AwsError> {
        let filters = vec![
            Filter::builder()
                .name(format!("tag:{NODECLAIM_TAG}"))
                .values(claim)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", launch::cluster_tag(&self.cluster.name)))
                .values("owned")
                .build(),
        ];
        Ok(self
            .describe_filtered(filters, Vec::new())
            .await?
            .into_iter()
            .find(is_live))
    }

    /// The instance behind a providerID, as a NodeClaim view; `NodeClaimNotFound` when it does
    /// not exist or is terminated.
    pub async fn get(
        &self,
        provider_id: &str,
        instance_types: &[InstanceType],
    ) -> Result<NodeClaim, AwsError> {
        let id = launch::instance_id(provider_id)
            .ok_or_else(|| AwsError::Fatal(format!("{provider_id:?} is not an AWS providerID")))?;
        Ok(instance_view(&self.describe(id).await?, instance_types))
    }

    /// Every live instance this cluster's Karpenter launched (tagged with a NodePool and the
    /// cluster), for garbage collection.
    pub async fn list(&self, instance_types: &[InstanceType]) -> Result<Vec<NodeClaim>, AwsError> {
        let filters = vec![
            Filter::builder()
                .name("tag-key")
                .values(NODEPOOL_TAG)
                .build(),
            Filter::builder()
                .name(format!("tag:{}", launch::cluster_tag(&self.cluster.name)))
                .values("owned")
                .build(),
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.iter().map(|s| (*s).to_owned()).collect()))
                .build(),
        ];
        let instances = self.describe_filtered(filters, Vec::new()).await?;
        let mut views: Vec<NodeClaim> = instances
            .iter()
            .filter(|i| is_live(i))
            .map(|i| instance_view(i, instance_types))
            .collect();
        views.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(views)
    }

    /// Terminates the NodeClaim's instance. `NodeClaimNotFound` once it is gone (callers repeat
    /// until then).
    pub async fn delete(&self, claim: &NodeClaim) -> Result<(), AwsError> {
        let provider_id = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .ok_or_else(|| AwsError::NodeClaimNotFound("NodeClaim has no providerID".into()))?;
        let id = launch::instance_id(&provider_id)
            .ok_or_else(|| AwsError::Fatal(format!("{provider_id:?} is not an AWS providerID")))?;
        // Terminating a terminated instance succeeds on EC2; check first so callers learn it is gone.
        self.describe(id).await?;
        self.client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| from_sdk("TerminateInstances", e))?;
        Ok(())
    }
}
