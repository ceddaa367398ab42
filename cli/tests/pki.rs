//! `amble pki …` through the binary: keys 0600 and never printed, revocation rewrites the CRL.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::Path;
use std::process::{Command, Output};

fn amble(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amble"))
        .args(args)
        .output()
        .expect("run amble")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pki_init_issue_revoke_writes_private_keys_0600_and_never_prints_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let d = dir.to_str().unwrap();
    let mut printed = ok(&amble(&[
        "pki",
        "init",
        "--dir",
        d,
        "--federation",
        "acme",
        "--organisation",
        "acme-bank",
    ]));
    printed += &ok(&amble(&[
        "pki",
        "issue",
        "--dir",
        d,
        "--name",
        "node-1",
        "--role",
        "node",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--days",
        "30",
    ]));
    printed += &ok(&amble(&[
        "--json", "pki", "issue", "--dir", d, "--name", "crm", "--role", "app",
    ]));
    assert!(printed.contains("spiffe://acme/node/node-1"), "{printed}");
    assert!(printed.contains("spiffe://acme/app/crm"), "{printed}");
    assert!(!printed.contains("PRIVATE KEY"), "a key was printed");

    #[cfg(unix)]
    for key in [
        dir.join("ca.key"),
        dir.join("certs/node-1.key"),
        dir.join("certs/crm.key"),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    let crl_before = std::fs::read(dir.join("crl.pem")).unwrap();
    let revoked = ok(&amble(&["pki", "revoke", "--dir", d, "--name", "crm"]));
    assert!(!revoked.contains("PRIVATE KEY"));
    assert_ne!(crl_before, std::fs::read(dir.join("crl.pem")).unwrap());
    let listed = ok(&amble(&["--json", "pki", "list", "--dir", d]));
    let list: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let crm = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "crm")
        .unwrap();
    assert!(crm["revoked_at"].is_string());
}

#[test]
fn pki_refuses_unknown_roles_and_a_missing_ca_with_a_next_step() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("pki");
    let d = d.to_str().unwrap();
    let o = amble(&["pki", "issue", "--dir", d, "--name", "x", "--role", "app"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("amble pki init"));
    ok(&amble(&["pki", "init", "--dir", d, "--federation", "acme"]));
    let o = amble(&["pki", "issue", "--dir", d, "--name", "x", "--role", "root"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!Path::new(d).join("certs/x.key").exists());
}

#[test]
fn the_federation_ca_refuses_an_app_and_says_where_it_comes_from() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("fed");
    let d = d.to_str().unwrap();
    ok(&amble(&["pki", "init", "--dir", d, "--federation", "acme"]));
    let o = amble(&["pki", "issue", "--dir", d, "--name", "crm", "--role", "app"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--organisation"), "{err}");
    assert!(!Path::new(d).join("certs/crm.key").exists());
}
