//! herdd's command line (here, not in main.rs, so that `herd` can write herdd's man page).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "herdd",
    version,
    about = "The herd daemon: joins this machine to the cluster that holds the same key",
    after_help = "Zero configuration: with no config file, herdd uses the key in /etc/herd/cluster.key,\n\
                  listens on 0.0.0.0:4700 and finds the other nodes by multicast beacon.\n\
                  Create the key once with `herd keygen` and copy it (mode 0600) to every node.\n\
                  Log level: HERD_LOG=debug (default info)."
)]
pub struct Args {
    /// Configuration file (TOML)
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration and the key, print the result, and exit
    #[arg(long)]
    pub check: bool,
}

