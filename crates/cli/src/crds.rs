//! `karpenter crds`: print the CustomResourceDefinitions, or write one file per CRD.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Arguments of `karpenter crds`.
#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Write one `<group>_<plural>.yaml` file per CRD into this directory instead of printing.
    #[arg(short = 'o', long = "output-dir")]
    pub output_dir: Option<PathBuf>,
}

/// Prints all CRDs as multi-document YAML, or writes them to `args.output_dir`.
pub fn run(args: &CrdsArgs) -> Result<()> {
    let Some(dir) = &args.output_dir else {
        let yaml = karpenter_api::crds_yaml().context("serializing CRDs")?;
        return write_stdout(&yaml);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in karpenter_api::all_crds() {
        let path = dir.join(karpenter_api::crds::crd_file_name(&crd));
        let yaml = karpenter_api::crds::crd_yaml(&crd).context("serializing CRD")?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`karpenter crds | head`) is not an error.
pub fn write_stdout(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
