//! The live EC2 provider (feature `sdk`): official AWS SDK for Rust, tested against moto.

pub mod convert;
pub mod error;
pub mod instance;
pub mod launch;
pub mod nodeclass;
pub mod provider;

pub use error::AwsError;
pub use provider::Ec2Provider;
/// Re-exported so callers and tests configure clients with exactly the SDK version used here.
pub use {aws_config, aws_sdk_ec2};

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
