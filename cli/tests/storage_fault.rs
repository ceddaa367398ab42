//! A storage fault ends the node instead of wedging it: `amble node serve` on a data directory
//! that runs out of space (a small tmpfs in a mount namespace of its own, so the disk really
//! answers ENOSPC) fails the write with a clear status, turns readiness off, refuses later calls
//! with UNAVAILABLE, and exits by itself with status 75 for its supervisor to restart it.
//!
//! Needs `unshare` and root (for the mount namespace), as CI has; without them the test says
//! so, and under `CI` it fails rather than skip.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_node::server::client::ClientIdentity;
use amble_proto::v1 as pb;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn amble() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amble"))
}

fn ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn can_mount() -> bool {
    let probe = tempfile::tempdir().unwrap();
    Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=1m tmpfs {}",
            probe.path().display()
        ))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn running_out_of_disk_ends_the_node_with_status_75_instead_of_wedging_it() {
    if !can_mount() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs root and unshare(1) to mount a small tmpfs for this test"
        );
        eprintln!("skipped: needs root and unshare(1) to mount a small tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let p = pki.to_str().unwrap();
    ok(amble().args([
        "pki",
        "init",
        "--dir",
        p,
        "--federation",
        "t",
        "--organisation",
        "org-1",
    ]));
    for (name, role) in [("node-1", "node"), ("crm", "app")] {
        ok(amble().args([
            "pki",
            "issue",
            "--dir",
            p,
            "--name",
            name,
            "--role",
            role,
            "--ip",
            "127.0.0.1",
        ]));
    }
    let mnt = tmp.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[tls]\ncert = \"pki/certs/node-1.pem\"\n\
             key = \"pki/certs/node-1.key\"\nclient_ca = \"pki/ca.pem\"\ncrl = \"pki/crl.pem\"\n",
            mnt.join("data")
        ),
    )
    .unwrap();
    // A 24 MiB disk: room for the new store, not for many 3 MB records.
    let amble_bin = env!("CARGO_BIN_EXE_amble");
    let script = format!(
        "set -e; mount -t tmpfs -o size=24m tmpfs {mnt}; \
         {amble_bin} node init --data-dir {mnt}/data >/dev/null 2>&1 || true; \
         exec {amble_bin} node serve --config {config}",
        mnt = mnt.display(),
        config = config.display()
    );
    let log = tmp.path().join("serve.log");
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let url = format!("https://{addr}");
    let id = ClientIdentity::load(
        &pki.join("certs/crm.pem"),
        &pki.join("certs/crm.key"),
        &pki.join("ca.pem"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = format!("{{\"display_name\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let failure = rt.block_on(async {
        let ch = id.connect(&url).await.unwrap();
        let mut archive = pb::archive_client::ArchiveClient::new(ch);
        for i in 0..32 {
            let call = archive.append(pb::AppendRequest {
                records: vec![pb::NewRecord {
                    r#ref: format!("phone:+1555000{i:04}"),
                    collection: "profile".into(),
                    time: "2026-05-01T10:00:00Z".into(),
                    data_json: big.clone(),
                }],
            });
            match tokio::time::timeout(Duration::from_secs(30), call).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => return status,
                Err(_) => panic!("an append hung after {i} records on a full disk"),
            }
        }
        panic!("32 appends of 3 MB fitted on a 24 MiB disk");
    });
    assert!(
        matches!(
            failure.code(),
            tonic::Code::Internal | tonic::Code::Unavailable
        ),
        "{failure:?}"
    );
    // Later calls are refused at once, never hang, until the process is gone.
    let later = rt.block_on(async {
        let ch = id.endpoint(&url).unwrap().connect_lazy();
        tokio::time::timeout(
            Duration::from_secs(10),
            pb::admin_client::AdminClient::new(ch).health(pb::HealthRequest {}),
        )
        .await
    });
    match later {
        Ok(Ok(_)) => panic!("the node kept serving after a storage fault"),
        Ok(Err(status)) => assert!(
            matches!(status.code(), tonic::Code::Unavailable),
            "{status:?}"
        ),
        Err(_) => panic!("a call after the storage fault hung"),
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the node did not exit within 30 s of a storage fault");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(75), "stderr: {err}");
    assert!(err.contains("storage fault"), "{err}");
}
