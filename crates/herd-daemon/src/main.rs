//! `herdd`: the herd daemon.

use clap::Parser;
use herd_daemon::cli::Args;
use herd_daemon::config::{Config, DEFAULT_CONFIG};

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
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let prepared = herd_daemon::daemon::prepare(config).await?;
        prepared.run().await
    })
}

/// herdd holds a few descriptors per migratable process (a pidfd at home, streams away):
/// its limit of open files goes up to what it may be (the hard limit), as a service's
/// usually is. Processes herdd starts get their own limits from their images.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the limit of open files from {soft} to {hard}: {e}");
            }
        }
    }
}
