//! `herd-bench stream`: how fast herd's node stream carries bulk data on this
//! machine, beside plain TCP over loopback in the same run: the Noise stream
//! (AES-256-GCM through ring) sending 1 MiB messages, as a move sends its image,
//! and the cipher alone. The loopback TCP is the ceiling either can reach.

use std::time::Instant;

use anyhow::{Context, Result};
use herd_wire::stream::{NodeKeypair, SecureStream};
use herd_wire::ClusterKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::median;

const MESSAGE: usize = 1 << 20;

pub fn run(mib: u64, reps: usize) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    println!("herd-bench stream: {mib} MiB over loopback, {reps} repetitions, interleaved (medians, min-max)");
    let (mut tcp, mut noise) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        tcp.push(rt.block_on(plain(mib)).context("plain TCP")?);
        noise.push(rt.block_on(secure(mib)).context("Noise stream")?);
    }
    let row = |name: &str, v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        println!("{name:<52} {:>8.0} MiB/s  ({lo:.0}-{hi:.0})", median(v.to_vec()).unwrap_or(f64::NAN));
    };
    row("plain TCP, 1 MiB writes", &tcp);
    row(&format!("herd node stream ({})", herd_wire::stream::NOISE_PATTERN), &noise);
    let ratio: Vec<f64> = noise.iter().zip(&tcp).map(|(n, t)| n / t).collect();
    println!("stream/TCP: {:.2} (median of the per-repetition ratios)", median(ratio).unwrap_or(f64::NAN));
    Ok(true)
}

async fn plain(mib: u64) -> Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; MESSAGE];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return Ok::<u64, std::io::Error>(n);
            }
            n += k as u64;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let data = vec![0x5au8; MESSAGE];
    let t = Instant::now();
    for _ in 0..mib {
        s.write_all(&data).await?;
    }
    s.shutdown().await?;
    let got = sink.await??;
    anyhow::ensure!(got == mib << 20, "the sink got {got} bytes");
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

async fn secure(mib: u64) -> Result<f64> {
    let key = ClusterKey::generate()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let k2 = key.clone();
    let sink = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut s = SecureStream::accept(tcp, &k2, &NodeKeypair::generate()?).await?;
        let mut n = 0u64;
        loop {
            match s.recv().await {
                Ok(m) => n += m.len() as u64,
                Err(herd_wire::StreamError::Closed) => return Ok::<u64, anyhow::Error>(n),
                Err(e) => return Err(e.into()),
            }
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut s = SecureStream::connect(tcp, &key, &NodeKeypair::generate()?).await?;
    let data = vec![0x5au8; MESSAGE];
    let t = Instant::now();
    for _ in 0..mib {
        s.send(&data).await?;
    }
    s.shutdown().await?;
    let got = sink.await??;
    anyhow::ensure!(got == mib << 20, "the sink got {got} bytes");
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}
