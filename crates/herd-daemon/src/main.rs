//! `herdd`: the herd daemon.

use std::path::PathBuf;

use clap::Parser;
use herd_daemon::config::{Config, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(
    name = "herdd",
    version,
    about = "The herd daemon: joins this machine to the cluster that holds the same key",
    after_help = "Zero configuration: with no config file, herdd uses the key in /etc/herd/cluster.key,\n\
                  listens on 0.0.0.0:4700 and finds the other nodes by multicast beacon.\n\
                  Create the key once with `herd keygen` and copy it (mode 0600) to every node.\n\
                  Log level: HERD_LOG=debug (default info)."
)]
struct Args {
    /// Configuration file (TOML)
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and the key, print the result, and exit
    #[arg(long)]
    check: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HERD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("herdd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let explicit = args.config.is_some();
    let path = args.config.unwrap_or_else(|| DEFAULT_CONFIG.into());
    let config = Config::load(&path, explicit)?;
    if args.check {
        let key = herd_wire::ClusterKey::load(&config.key_file)?;
        println!("configuration {}: ok", config.source.as_ref().map_or("(defaults)".into(), |p| p.display().to_string()));
        println!("node {} listening on {}, key {}", config.name, config.listen, key.fingerprint());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let prepared = herd_daemon::daemon::prepare(config).await?;
        prepared.run().await
    })
}
