//! What every CLI test needs: run the binary with a clean environment, read its output.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `amble ARGS` with no `AMBLE_*` variables from the caller's environment.
pub fn amble(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amble"));
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AMBLE_") {
            c.env_remove(k);
        }
    }
    c.output().expect("the amble binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stdout of a command that must succeed (its stderr is shown if it did not).
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}
