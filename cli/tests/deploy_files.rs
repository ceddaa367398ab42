//! deploy/ checked offline: the systemd units (`systemd-analyze verify` and `security`), the
//! compose file (`docker-compose config`, the compose schema, without an engine), the
//! Kubernetes manifests (`kubernetes-validate --strict`, which carries the API schemas), and
//! every amble config these files mount, loaded by the real config loaders.
//!
//! The external validators are installed by `.ci/run`. Outside CI a missing one is skipped
//! with a message; in CI (`CI` set) a missing one fails, so a green run always validated.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `Some(program)` if `program args…` runs; `None` (skip) outside CI; a panic in CI.
fn tool(program: &str, probe: &[&str], install: &str) -> Option<String> {
    let ok = Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(program.to_owned());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is required in CI; .ci/run installs it ({install})"
    );
    eprintln!("SKIPPED: {program} is not installed ({install})");
    None
}

/// Every YAML document of `path` as JSON (PyYAML's safe loader, as kubectl and compose read
/// YAML 1.1 the same way for these files).
fn yaml_docs(path: &Path) -> Option<Vec<Value>> {
    // .ci/run points this at its venv's Python, which has PyYAML.
    let py = std::env::var("AMBLE_DEPLOY_PYTHON").unwrap_or("python3".into());
    let py = tool(&py, &["-c", "import yaml"], "a Python with PyYAML")?;
    let out = Command::new(py)
        .args([
            "-c",
            "import sys, json, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `[Service]` of a unit file: key → every value it is given, in order.
fn service_section(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            map.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    map
}

fn one<'a>(s: &'a BTreeMap<String, Vec<String>>, key: &str, unit: &str) -> &'a str {
    let v = s
        .get(key)
        .unwrap_or_else(|| panic!("{unit}: {key}= is missing"));
    v.last().unwrap()
}

const UNITS: [(&str, &str); 2] = [
    ("amble-node.service", "node.toml"),
    ("amble-coordinator.service", "coordinator.toml"),
];

#[test]
fn systemd_units_are_hardened_and_match_their_configs() {
    for (unit, config) in UNITS {
        let s = service_section(&read(&deploy(&format!("systemd/{unit}"))));
        for (key, want) in [
            ("User", "amble"),
            ("Group", "amble"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("CapabilityBoundingSet", ""),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("Restart", "on-failure"),
        ] {
            assert_eq!(one(&s, key, unit), want, "{unit}: {key}=");
        }
        assert!(
            s["SystemCallFilter"].iter().any(|v| v == "@system-service"),
            "{unit}: SystemCallFilter=@system-service"
        );
        assert!(s.contains_key("TimeoutStopSec"), "{unit}: TimeoutStopSec=");
        let exec = one(&s, "ExecStart", unit);
        let config_path = exec
            .split_whitespace()
            .skip_while(|w| *w != "--config")
            .nth(1)
            .unwrap_or_else(|| panic!("{unit}: ExecStart has no --config"));
        assert_eq!(config_path, format!("/etc/amble/{config}"));

        // Writable: only what ReadWritePaths names, and that is only the state directories.
        let rw: Vec<&str> = one(&s, "ReadWritePaths", unit).split_whitespace().collect();
        let state: Vec<String> = one(&s, "StateDirectory", unit)
            .split_whitespace()
            .map(|d| format!("/var/lib/{d}"))
            .collect();
        assert_eq!(
            rw, state,
            "{unit}: ReadWritePaths= is the StateDirectory= list"
        );

        // The TLS key is a credential, and the config reads it from %d.
        let cred = one(&s, "LoadCredential", unit);
        let (name, _) = cred.split_once(':').expect("LoadCredential=NAME:PATH");
        let from_creds = format!("/run/credentials/{unit}/{name}");

        let path = deploy(&format!("systemd/{config}"));
        let (data_dir, tls_key, extra_rw) = if unit == "amble-node.service" {
            let c = amble_node::server::ServeConfig::load(&path).unwrap();
            let key = c.key_file.clone().expect("node.toml sets key_file");
            let key_dir = key.parent().unwrap().to_owned();
            assert!(
                !key.starts_with("/run/credentials"),
                "the node key file is rewritten on erase: it cannot be a credential"
            );
            assert_eq!(
                one(&s, "ExecReload", unit),
                "/bin/kill -HUP $MAINPID",
                "the node reloads policy and TLS on SIGHUP"
            );
            (c.data_dir, c.tls.key, Some(key_dir))
        } else {
            let c = load_coordinator(&path);
            assert_eq!(
                one(&s, "ExecReload", unit),
                "/bin/kill -HUP $MAINPID",
                "the coordinator reloads its TLS files on SIGHUP"
            );
            (c.data_dir, c.tls.key, None)
        };
        assert_eq!(tls_key, PathBuf::from(&from_creds), "{config}: [tls] key");
        let mut want_rw = vec![data_dir];
        want_rw.extend(extra_rw);
        let rw: Vec<PathBuf> = rw.iter().map(PathBuf::from).collect();
        assert_eq!(
            rw, want_rw,
            "{unit}: writable = data dir (+ the node key's dir)"
        );
    }
}

/// Loads a coordinator config whose labels file is where the image or package installs it,
/// with the repository's copy of that file instead.
fn load_coordinator(path: &Path) -> amble_coordinator::CoordinatorConfig {
    let text = read(path);
    let labels = repo().join("data/banking77/categories.json");
    let mut found = false;
    let text: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("labels_file") {
                found = true;
                format!("labels_file = {:?}", labels.display().to_string())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(found, "{}: labels_file", path.display());
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("coordinator.toml");
    std::fs::write(&p, text).unwrap();
    amble_coordinator::CoordinatorConfig::load(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Some(sa) = tool("systemd-analyze", &["--version"], "apt-get install systemd") else {
        return;
    };
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let tmp = tempfile::tempdir().unwrap();
    for (unit, _) in UNITS {
        let text = read(&deploy(&format!("systemd/{unit}")))
            .replace("/usr/local/bin/amble", env!("CARGO_BIN_EXE_amble"));
        std::fs::write(tmp.path().join(unit), text).unwrap();
    }
    let units: Vec<PathBuf> = UNITS.iter().map(|(u, _)| tmp.path().join(u)).collect();
    let out = Command::new(&sa)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any output fails the test.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
    for unit in &units {
        // Exposure 0–100 (shown as 0.0–10.0): at most 2.0, "OK".
        let out = Command::new(&sa)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(unit)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "systemd-analyze security {}:\n{stdout}\n{}",
            unit.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", stdout.lines().last().unwrap_or(""));
    }
}

// ---------------------------------------------------------------------------------------------
// compose

#[test]
fn compose_file_is_wired_as_documented() {
    let Some(docs) = yaml_docs(&deploy("compose.yaml")) else {
        return;
    };
    let c = &docs[0];
    let services = c["services"].as_object().expect("services");
    let named: Vec<&String> = c["volumes"].as_object().expect("volumes").keys().collect();
    for name in ["pki", "coordinator", "node-1", "node-2"] {
        let s = &services[name];
        assert_eq!(s["image"], "amble:local", "{name}");
        assert_eq!(s["build"]["dockerfile"], "deploy/Dockerfile", "{name}");
        assert_eq!(s["user"], "10001:10001", "{name}: not root");
        assert_eq!(s["read_only"], true, "{name}: read-only root");
        assert_eq!(s["cap_drop"], serde_json::json!(["ALL"]), "{name}");
        assert!(
            s["security_opt"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "no-new-privileges:true"),
            "{name}"
        );
        if name != "pki" {
            assert_eq!(
                s["depends_on"]["pki"]["condition"], "service_completed_successfully",
                "{name} starts after the certificates exist"
            );
        }
    }
    // Which service mounts which named volume where, and how.
    let mut owners: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, s) in services {
        for v in s["volumes"].as_array().unwrap() {
            let v = v.as_str().expect("short volume syntax");
            let parts: Vec<&str> = v.split(':').collect();
            let (src, dst, ro) = (parts[0], parts[1], parts.get(2) == Some(&"ro"));
            if src.starts_with("./") {
                // Bind mounts: files of this repository, always read-only.
                assert!(ro, "{name}: {v} must be read-only");
                assert!(deploy(src).is_file(), "{name}: {src} does not exist");
                continue;
            }
            assert!(
                named.contains(&&src.to_owned()),
                "{name}: {src} is not declared"
            );
            owners.entry(src.to_owned()).or_default().push(name);
            if src == "pki" && name != "pki" {
                assert!(ro, "{name}: certificates are mounted read-only");
                assert_eq!(dst, "/etc/amble/tls");
            }
            if src == "ca" {
                assert_eq!(name, "pki", "only the pki service sees the CA key");
            }
        }
    }
    for (vol, users) in &owners {
        if vol != "pki" {
            assert_eq!(
                users.len(),
                1,
                "volume {vol} belongs to one service: {users:?}"
            );
        }
    }
    for s in ["coordinator", "node-1", "node-2"] {
        let data = if s == "coordinator" {
            "coordinator-data".to_owned()
        } else {
            format!("{s}-data")
        };
        assert_eq!(owners[&data], vec![s], "{s} has its own data volume");
    }

    // The configs it mounts load with the real loaders and use the mounted paths.
    for n in ["node-1", "node-2"] {
        let c = amble_node::server::ServeConfig::load(&deploy(&format!("compose/{n}.toml")))
            .unwrap_or_else(|e| panic!("compose/{n}.toml: {e}"));
        assert_eq!(
            c.tls.key,
            PathBuf::from(format!("/etc/amble/tls/{n}/key.pem"))
        );
        assert!(c.data_dir.starts_with("/var/lib/amble/"));
        assert!(c.key_file.unwrap().starts_with("/var/lib/amble-key/"));
        assert!(c.metrics.is_some(), "compose/{n}.toml: [metrics]");
    }
    let c = load_coordinator(&deploy("compose/coordinator.toml"));
    assert_eq!(c.listen.port(), 7450);
    let script = read(&deploy("compose/pki-init.sh"));
    for n in ["coordinator", "node-1", "node-2"] {
        assert!(
            script.contains(&format!("issue {n} ")),
            "pki-init.sh issues {n}"
        );
    }

    // The image: a Rust build stage, a Debian slim runtime, a non-root user, the labels file
    // where the coordinator config expects it.
    let df = read(&deploy("Dockerfile"));
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:") && froms[1].contains("-slim"));
    let user = df.lines().rfind(|l| l.starts_with("USER ")).expect("USER");
    assert_eq!(user, "USER 10001:10001");
    assert!(df.contains("COPY data/banking77/categories.json /usr/share/amble/intents.json"));
}

#[test]
fn compose_file_passes_the_compose_schema() {
    let Some(dc) = tool(
        "docker-compose",
        &["version"],
        "apt-get install --no-install-recommends docker-compose",
    ) else {
        return;
    };
    // `config` validates and resolves the file without talking to a Docker engine.
    let out = Command::new(dc)
        .current_dir(deploy(""))
        .args(["-f", "compose.yaml", "config", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-compose config:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn k8s_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [deploy("k8s"), deploy("k8s/templates")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The oldest and newest Kubernetes minor versions the manifests are checked against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

#[test]
fn kubernetes_manifests_pass_the_api_schemas() {
    let program =
        std::env::var("AMBLE_KUBERNETES_VALIDATE").unwrap_or("kubernetes-validate".into());
    let Some(kv) = tool(&program, &["--version"], "pip install kubernetes-validate") else {
        return;
    };
    let files = k8s_files();
    assert!(files.len() >= 3, "{files:?}");
    for v in KUBERNETES_VERSIONS {
        let out = Command::new(&kv)
            .args(["--strict", "--quiet", "-k", v])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {v}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn pod_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

#[test]
fn kubernetes_manifests_are_locked_down_and_match_their_configs() {
    let mut kinds: BTreeMap<(String, String), Value> = BTreeMap::new();
    for f in k8s_files() {
        let Some(docs) = yaml_docs(&f) else {
            return;
        };
        for d in docs {
            let key = (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            );
            kinds.insert(key, d);
        }
    }
    let get = |kind: &str, name: &str| {
        kinds
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("{kind}/{name} is missing"))
    };

    // Templates hold placeholders, never keys.
    for name in ["amble-coordinator-tls", "amble-node-tls"] {
        let s = get("Secret", name);
        for (k, v) in s["stringData"].as_object().unwrap() {
            assert!(v.as_str().unwrap().contains("REPLACE WITH"), "{name}/{k}");
        }
    }

    for (role, port, config) in [
        ("amble-coordinator", 7450, "coordinator.toml"),
        ("amble-node", 7443, "node.toml"),
    ] {
        let sts = get("StatefulSet", role);
        assert_eq!(sts["spec"]["replicas"], 1, "{role}: one writer per store");
        assert!(
            sts["spec"]["volumeClaimTemplates"]
                .as_array()
                .is_some_and(|v| v.iter().any(|c| c["metadata"]["name"] == "data")),
            "{role}: a PersistentVolumeClaim template for its data"
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{role}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{role}");
        for c in pod_containers(pod) {
            let n = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{role}/{n}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{role}/{n}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{role}/{n}"
            );
            for k in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    assert!(
                        c["resources"][k][r].is_string(),
                        "{role}/{n}: resources.{k}.{r}"
                    );
                }
            }
        }
        let main = &pod["containers"][0];
        for (probe, path) in [
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
            ("startupProbe", "/healthz"),
        ] {
            assert_eq!(main[probe]["httpGet"]["path"], path, "{role}: {probe}");
            assert_eq!(main[probe]["httpGet"]["port"], "metrics", "{role}: {probe}");
        }
        let ports = main["ports"].as_array().unwrap();
        let named = |n: &str| {
            ports
                .iter()
                .find(|p| p["name"] == n)
                .unwrap_or_else(|| panic!("{role}: port {n}"))["containerPort"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(named("grpc"), port);
        assert_eq!(named("metrics"), 9090);

        // The NetworkPolicy admits exactly the gRPC port and the metrics port.
        let np = get("NetworkPolicy", role);
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            role
        );
        let mut admitted: Vec<u64> = np["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ports"].as_array().unwrap().iter())
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        admitted.sort();
        assert_eq!(admitted, vec![port.min(9090), port.max(9090)], "{role}");

        // The embedded config loads and agrees with the pod: ports, TLS from the copied files.
        let cm = get("ConfigMap", &format!("{role}-config"));
        let text = cm["data"][config].as_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join(config);
        std::fs::write(&p, text).unwrap();
        let (listen, metrics, key) = if role == "amble-node" {
            let c = amble_node::server::ServeConfig::load(&p).unwrap();
            assert_eq!(
                c.key_file.as_deref(),
                Some(Path::new("/var/lib/amble-key/node.key")),
                "the node key lives on its own writable volume"
            );
            (c.listen, c.metrics.expect("[metrics]").listen, c.tls.key)
        } else {
            let c = load_coordinator(&p);
            (c.listen, c.metrics.expect("[metrics]").listen, c.tls.key)
        };
        assert_eq!(listen.port() as u64, port, "{role}: listen");
        assert_eq!(metrics.port(), 9090, "{role}: [metrics] listen");
        assert!(
            metrics.ip().is_unspecified(),
            "{role}: probes reach the pod IP"
        );
        assert_eq!(key, PathBuf::from("/run/amble/tls/tls.key"));
    }
}
