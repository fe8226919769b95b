//! The live EC2 provider (feature `sdk`): official AWS SDK for Rust, tested against moto.

pub mod ami;
pub mod cloudprovider;
pub mod cluster;
pub mod convert;
pub mod drift;
pub mod error;
pub mod iam;
pub mod instance;
pub mod interruption;
pub mod launch;
pub mod nodeclass;
pub mod provider;
pub mod reservations;
pub mod reserved;
pub mod status;
pub mod template;

pub use cloudprovider::AwsCloudProvider;
pub use error::AwsError;
pub use provider::Ec2Provider;
/// Re-exported so callers and tests configure clients with exactly the SDK version used here.
pub use {aws_config, aws_sdk_ec2, aws_sdk_iam, aws_sdk_sqs, aws_sdk_ssm};

/// The AWS service clients the provider uses, from one shared configuration.
#[derive(Debug, Clone)]
pub struct AwsClients {
    /// EC2.
    pub ec2: aws_sdk_ec2::Client,
    /// IAM (instance profile, role and service-linked-role checks).
    pub iam: aws_sdk_iam::Client,
    /// SQS (the interruption queue).
    pub sqs: aws_sdk_sqs::Client,
    /// SSM (the parameters behind image aliases such as `al2023@latest`).
    pub ssm: aws_sdk_ssm::Client,
    /// Prepended to every SSM parameter name an alias looks up; empty (AWS's own
    /// `/aws/service/...` names) unless [`AwsClients::with_ssm_parameter_prefix`] says otherwise.
    pub ssm_parameter_prefix: String,
}

impl AwsClients {
    /// Clients for every service from one configuration.
    pub fn new(conf: &aws_config::SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(conf),
            iam: aws_sdk_iam::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            ssm: aws_sdk_ssm::Client::new(conf),
            ssm_parameter_prefix: String::new(),
        }
    }

    /// For tests against moto only: look alias parameters up under `prefix` (e.g.
    /// `/karpenter-test/run-1` → `/karpenter-test/run-1/aws/service/eks/...`). Moto has none of
    /// the EKS parameters and refuses PutParameter on names that start with `/aws`, so tests
    /// publish them under a prefix instead; on AWS the prefix stays empty.
    pub fn with_ssm_parameter_prefix(mut self, prefix: &str) -> Self {
        self.ssm_parameter_prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// Clients from the standard AWS configuration chain (environment, profile, IMDS/IRSA;
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` are honoured by it). `region` and `endpoint_url`
    /// override what the chain finds.
    pub async fn from_env(region: Option<&str>, endpoint_url: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Self::new(&loader.load().await)
    }
}

/// An EC2 client for `region`, from the standard AWS configuration chain (environment, profile,
/// IMDS/IRSA). `endpoint_url` (or `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2`) points it at an
/// emulator such as moto.
pub async fn ec2_client(region: &str, endpoint_url: Option<&str>) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()));
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    aws_sdk_ec2::Client::new(&loader.load().await)
}
