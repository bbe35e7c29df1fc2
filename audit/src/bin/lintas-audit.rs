//! `lintas-audit`: the auditor's verifier on its own, built without the security server
//! (`cargo install --path audit`). The same checks and words as `lintas audit verify`
//! and `lintas audit verify-archive`, and the same exit statuses: 0 verified, 2 a wrong
//! command line, 3 an anchor that cannot be read, 6 evidence that does not verify,
//! 1 anything else.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lintas-audit",
    version,
    about = "Verify lintas evidence offline, trusting only the instance's anchor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify evidence bundles. With two bundles (the two sides of the same exchanges)
    /// they are also checked against each other.
    Verify {
        /// One bundle, or the consumer's and the provider's.
        #[arg(required = true, num_args = 1..=2)]
        bundles: Vec<PathBuf>,
        /// The instance's anchor file, obtained from the instance operator out of band.
        #[arg(long)]
        anchor: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify an archive of sealed log segments (`lintas audit archive`).
    VerifyArchive {
        /// The directory the archive was written to.
        dir: PathBuf,
        #[arg(long)]
        anchor: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Verify {
            bundles,
            anchor,
            json,
        } => lintas_audit::command::verify(&bundles, &anchor, json),
        Command::VerifyArchive { dir, anchor, json } => {
            lintas_audit::command::verify_archive(&dir, &anchor, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let anchor = |c: &(dyn std::error::Error + 'static)| {
                matches!(
                    c.downcast_ref::<lintas_globalconf::ConfError>(),
                    Some(lintas_globalconf::ConfError::Anchor { .. })
                )
            };
            let status = if e.is::<lintas_audit::command::NotVerified>() {
                6
            } else if e.chain().any(anchor) {
                3
            } else {
                1
            };
            ExitCode::from(status)
        }
    }
}
