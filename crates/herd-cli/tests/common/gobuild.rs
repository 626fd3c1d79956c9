//! Building a Go test program (golang-go) with the `go` on PATH. Shared by the test files.

use std::path::Path;
use std::process::{Command, Stdio};

/// `go version`'s line, or None when there is no working Go toolchain.
pub fn go_version() -> Option<String> {
    let out = Command::new("go").arg("version").stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `go build -o EXE SRC` (one file, no module), with its build cache and module path under
/// `scratch` (the test's own directory: nothing of the user's is written). A static
/// executable: the runtime's threads, signals and epoll are Go's own.
pub fn build_go(src: &Path, exe: &Path, scratch: &Path) -> Result<(), String> {
    let out = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(exe)
        .arg(src)
        .env("GOCACHE", scratch.join("gocache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running go build: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("go build {}: {}\n{}", src.display(), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}
