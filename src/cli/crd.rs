//! `tcred crd`: the CRDs as YAML, to stdout or one file per CRD (`crds/`, the Helm chart).

use std::path::PathBuf;

use super::error::Error;
use crate::api::{crd_file_name, crd_yaml, crds};

#[derive(Debug, clap::Args)]
pub struct CrdArgs {
    /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

pub fn run(args: &CrdArgs) -> Result<(), Error> {
    match &args.output_dir {
        None => {
            for crd in crds() {
                print!("---\n{}", crd_yaml(&crd)?);
            }
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for crd in crds() {
                std::fs::write(dir.join(crd_file_name(&crd)), crd_yaml(&crd)?)?;
            }
        }
    }
    Ok(())
}
