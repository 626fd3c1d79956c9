//! Failpoints: faults injected at the steps of a move, for the tests and the chaos
//! benchmark (the `fail` crate). Built without the `failpoints` feature (herdd as
//! installed), none exists and [`fires`] is always false.
//!
//! A point is set with `fail::cfg(NAME, ACTIONS)` (in herdd: the control socket's
//! `Request::Failpoint`, root only): `return` makes the step fail there, `N*off->return`
//! after N passes, `sleep(MS)` delays it. Each point fails its step the way a real fault
//! there would (a broken stream, a failed restore): the move is called off and the process
//! runs on where it was. The points ([`POINTS`]) and where they are:
//!
//! | point | node | step |
//! |---|---|---|
//! | `out-connected` | home | the target has accepted the process; nothing is captured yet |
//! | `out-image` | home | each message of the capture to the target (the image, mid-way) |
//! | `out-commit` | home | the process runs on the target; home has not committed |
//! | `arrive-restore` | target | the image is arriving; nothing is restored |
//! | `arrive-restored` | target | restored, not yet running |
//! | `away-capture` | a node it runs on | frozen for a move or a checkpoint, nothing sent |
//! | `away-image` | a node it runs on | each chunk of its image (mid-way) |
//! | `home-restore` | home | its image arrives home; the deputy has not taken it in |
//! | `wire-flip` | any | each encrypted frame this herdd sends (any stream): one byte of it flipped, which the receiver's AEAD rejects (herd-wire) |

/// Every failpoint, by name (see the module documentation).
pub const POINTS: [&str; 9] = ["out-connected", "out-image", "out-commit", "arrive-restore", "arrive-restored", "away-capture", "away-image", "home-restore", "wire-flip"];

/// Whether failpoint `name` fires now: its step is to fail.
pub fn fires(name: &str) -> bool {
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    fail::fail_point!(name, |_| true);
    false
}

/// Whether this build has failpoints at all.
pub const BUILT_IN: bool = cfg!(feature = "failpoints");

/// Sets failpoint `name` to `actions` (`off` clears it). A name not in [`POINTS`], or
/// actions the `fail` crate cannot parse, is refused; so is any point in a build without
/// failpoints.
pub fn set(name: &str, actions: &str) -> Result<(), String> {
    if !BUILT_IN {
        return Err("this herdd was built without failpoints (cargo feature `failpoints` of herd-daemon)".into());
    }
    if !POINTS.contains(&name) {
        return Err(format!("no failpoint {name:?} (there are: {})", POINTS.join(", ")));
    }
    if actions == "off" {
        fail::remove(name);
        return Ok(());
    }
    fail::cfg(name, actions).map_err(|e| format!("failpoint {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_points_and_bad_actions_are_refused() {
        if !BUILT_IN {
            assert!(set("out-image", "return").unwrap_err().contains("without failpoints"));
            assert!(!fires("out-image"));
            return;
        }
        assert!(set("no-such-point", "return").unwrap_err().contains("no failpoint"));
        assert!(set("out-commit", "what?").is_err());
        assert!(!fires("away-image"));
        set("away-image", "1*off->return").unwrap();
        assert!(!fires("away-image"), "the first pass is off");
        assert!(fires("away-image"));
        set("away-image", "off").unwrap();
        assert!(!fires("away-image"));
    }
}
