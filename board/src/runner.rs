//! Starting the workspace's binaries from tests, natively or under an emulator.
//!
//! When the tests themselves run under an emulator (`scripts/cross-build.sh` runs the
//! aarch64 and armv7 test binaries under qemu-user), the binaries they start
//! (`branchd`, `branch-sim`, `branch-hq`, `branch-image`, `branch-prov`) are foreign
//! too and, without binfmt_misc, need the same emulator. The environment variable
//! [`RUNNER_VAR`] then holds its command line, words separated by spaces
//! (`qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=...`), and [`command`]
//! puts it in front of the binary. Every crate's tests start binaries through this one
//! function, so the cross test stage runs the same tests as the host.

use std::ffi::OsStr;
use std::process::Command;

/// The environment variable naming the emulator command line (unset or empty: none).
pub const RUNNER_VAR: &str = "BRANCHLINE_TEST_RUNNER";

/// A [`Command`] running the binary at `path`: directly, or under the emulator named
/// by [`RUNNER_VAR`].
pub fn command(path: impl AsRef<OsStr>) -> Command {
    let runner = std::env::var(RUNNER_VAR).unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut cmd = Command::new(emulator);
            cmd.args(words).arg(path);
            cmd
        }
        None => Command::new(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_the_runner_in_front_of_the_binary() {
        // The only test of this crate that reads or writes the variable; the previous
        // value (set by the cross test stage) is put back.
        let before = std::env::var_os(RUNNER_VAR);
        std::env::set_var(RUNNER_VAR, "qemu-aarch64 -L /usr/aarch64-linux-gnu");
        let cmd = command("/bin/branchd");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(cmd.get_program(), "qemu-aarch64");
        assert_eq!(args, ["-L", "/usr/aarch64-linux-gnu", "/bin/branchd"]);
        std::env::set_var(RUNNER_VAR, "  ");
        let cmd = command("/bin/branchd");
        assert_eq!(cmd.get_program(), "/bin/branchd");
        assert_eq!(cmd.get_args().count(), 0);
        match before {
            Some(v) => std::env::set_var(RUNNER_VAR, v),
            None => std::env::remove_var(RUNNER_VAR),
        }
    }
}
