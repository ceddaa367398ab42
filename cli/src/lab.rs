//! A whole federation on one machine, as separate processes on 127.0.0.1 with real mutual
//! TLS: a federation CA, a coordinator and N organisation nodes, each with its own store
//! in a directory of its own. `amble demo` runs one; the multi-process tests drive one to
//! kill nodes and the coordinator mid-round.
//!
//! Every process is the `amble` binary itself (`amble coordinator serve`, `amble node serve`),
//! started with `--json` so the lab can read the address it bound; their logs go to
//! `DIR/logs/NAME.log`. Dropping the lab kills whatever is still running.
//!
//! With [`LabSpec::netns`] every participant runs in a network namespace of its own, at an
//! address of its own on a bridge, and a link can be cut and restored ([`NetnsPlan`]).

use amble_coordinator::FederationStatus;
use amble_crypto::ExternalRef;
use amble_learn::model::IntentModel;
use amble_learn::train::TextRow;
use amble_net::ClientIdentity;
use amble_node::{Actor, Collection, ConsentChange, NewRecord, Node};
use amble_policy::Role;
use amble_proto::v1 as pb;
use anyhow::{Context, Result, anyhow, bail};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// The `amble` binary to run the services with.
    pub bin: PathBuf,
    /// Everything goes under here.
    pub dir: PathBuf,
    /// The federation's name (`demo.amble` by default): the trust domain of every
    /// `spiffe://` identity the lab issues.
    pub federation: String,
    /// How many organisation nodes to run (`node-a`, `node-b`, …); [`Lab::create`] wants a
    /// [`NodeData`] for each.
    pub nodes: usize,
    /// Training rounds the coordinator runs before the federation is done.
    pub rounds: u64,
    /// Per-person ε at each node over all rounds; `None` trains without privacy.
    pub epsilon: Option<f64>,
    /// The δ that ε is stated at, for the coordinator's DP plan and each node's budget (1e-5).
    pub delta: f64,
    /// A round closes as soon as this many updates are in…
    pub nodes_per_round: usize,
    /// …or at its deadline with at least this many.
    pub min_nodes: usize,
    /// Seconds a round stays open for stragglers (120 by default).
    pub round_deadline_secs: u64,
    /// `[model] features`.
    pub features: amble_learn::model::FeatureKind,
    /// n-gram buckets (2^dim_log2) for `hashed` and `both`.
    pub dim_log2: u8,
    /// Weight of the initial model built from the intents' names (0 = zero weights).
    pub label_prior: f32,
    /// Local epochs per round (plain training).
    pub local_epochs: usize,
    /// L2 bound on every update.
    pub clip_bound: f64,
    /// DP: sampling rate, steps per round, per-person clip, learning rate.
    pub dp_sample_rate: f64,
    /// DP-SGD steps each node runs per round.
    pub dp_steps_per_round: u64,
    /// L2 bound on each person's gradient contribution per DP-SGD step (the C of DP-SGD).
    pub dp_clip_norm: f64,
    /// Local DP-SGD learning rate.
    pub dp_learning_rate: f32,
    /// The aggregate is added to the global model times this (post-processing: no privacy
    /// cost).
    pub server_learning_rate: f32,
    /// The server learning rate decays linearly to this fraction of itself by the last round
    /// (1 = constant).
    pub server_final_lr_fraction: f32,
    /// Run every participant in a network namespace of its own, with its own address, instead
    /// of all on 127.0.0.1 (Linux, root and iproute2; see [`NetnsPlan`]). `None` by default.
    pub netns: Option<NetnsPlan>,
}

impl LabSpec {
    /// Defaults that finish in a few minutes on 2 cores.
    pub fn new(
        bin: PathBuf,
        dir: PathBuf,
        nodes: usize,
        rounds: u64,
        epsilon: Option<f64>,
    ) -> Self {
        LabSpec {
            bin,
            dir,
            federation: "demo.amble".into(),
            nodes,
            rounds,
            epsilon,
            delta: 1e-5,
            nodes_per_round: nodes,
            min_nodes: nodes.div_ceil(2).max(1),
            round_deadline_secs: 120,
            features: amble_learn::model::FeatureKind::Sentence,
            dim_log2: 14,
            label_prior: 5.0,
            local_epochs: 1,
            // A DP update is at most lr·steps·C of signal (700 here) plus its noise
            // (≈ lr·σ·C·√(params·steps)/(q·N), under 100 here); the bound stops absurd
            // updates without clipping honest ones.
            clip_bound: if epsilon.is_some() { 2000.0 } else { 100.0 },
            dp_sample_rate: 0.3,
            dp_steps_per_round: 7,
            dp_clip_norm: 0.2,
            dp_learning_rate: 500.0,
            server_learning_rate: 1.0,
            server_final_lr_fraction: 1.0,
            netns: None,
        }
    }
}

/// One organisation's share of the data: Banking77 rows, each its own person.
#[derive(Debug, Clone, Default)]
pub struct NodeData {
    /// Its training rows; row `i` is the conversation of the person [`person_ref`]`(node, i)`.
    pub rows: Vec<TextRow>,
}

/// The people of node `node`: `phone:+1555NNNNMMMMMMM`-style references, distinct per node.
pub fn person_ref(node: usize, i: usize) -> String {
    format!("phone:+1{:03}{i:07}", 500 + node)
}

struct Proc {
    child: Child,
    addr: String,
    /// What the service printed when it came up.
    hello: serde_json::Value,
}

/// A running (or stopped) local federation.
pub struct Lab {
    /// What the lab was built from: its directory, binary and training settings.
    pub spec: LabSpec,
    ca_dir: PathBuf,
    coordinator: Option<Proc>,
    coordinator_config: PathBuf,
    coordinator_url: String,
    nodes: Vec<Option<Proc>>,
    node_configs: Vec<PathBuf>,
    node_urls: Vec<String>,
    witness_key: String,
    rt: tokio::runtime::Runtime,
    /// The namespaces and links, when the spec asks for them; deleted when the lab drops
    /// (after its `Drop` has killed the processes).
    netns: Option<Netns>,
}

fn cert(ca: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        ca.join("certs").join(format!("{name}.pem")),
        ca.join("certs").join(format!("{name}.key")),
    )
}

impl Lab {
    /// Creates the CA, the certificates and every node's data directory; starts nothing.
    /// `labels` is the public list of intents the federation's model covers.
    pub fn create(
        spec: LabSpec,
        labels: &[String],
        data: &[NodeData],
        say: &dyn Fn(&str),
    ) -> Result<Lab> {
        if data.len() != spec.nodes {
            bail!("{} nodes but data for {}", spec.nodes, data.len());
        }
        std::fs::create_dir_all(spec.dir.join("logs"))?;
        let netns = match &spec.netns {
            Some(plan) => {
                let mut names = vec!["coordinator".to_owned()];
                names.extend((0..spec.nodes).map(node_name));
                let n = Netns::create(plan, &names)?;
                say(&format!(
                    "network namespaces {}-*: the coordinator and each node at an address of its own in {}",
                    n.prefix(),
                    n.subnet()
                ));
                Some(n)
            }
            None => None,
        };
        let ca_dir = spec.dir.join("ca");
        let ca = amble_crypto::pki::Ca::init(&ca_dir, &spec.federation)?;
        let issue = |ca: &amble_crypto::pki::Ca, name: &str, role: &str| -> Result<()> {
            let mut req = amble_crypto::pki::IssueRequest::new(name, role);
            req.ips = vec!["127.0.0.1".parse()?];
            if let Some(ip) = netns.as_ref().and_then(|n| n.address(name)) {
                req.ips.push(ip.into());
            }
            ca.issue(&req)?;
            Ok(())
        };
        issue(&ca, "coordinator", "coordinator")?;
        for name in ["admin", "auditor"] {
            issue(&ca, name, name)?;
        }
        say(&format!(
            "federation CA {:?} created: certificates for the coordinator, {} nodes, the federation's admin and auditor; \
             each organisation has a CA of its own for its app, admin and auditor",
            spec.federation, spec.nodes
        ));

        let coordinator_config = spec.dir.join("coordinator.toml");
        std::fs::write(
            spec.dir.join("labels.json"),
            serde_json::to_vec_pretty(labels)?,
        )?;

        let mut node_configs = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let name = format!("node-{}", (b'a' + i as u8) as char);
            issue(&ca, &name, "node")?;
            let dir = spec.dir.join(&name);
            let org = amble_crypto::pki::Ca::init_organisation(
                &dir.join("org-ca"),
                &spec.federation,
                &format!("org-{}", (b'a' + i as u8) as char),
            )?;
            for role in ["app", "admin", "auditor"] {
                issue(&org, role, role)?;
            }
            load_node(&dir.join("data"), i, d, &spec)?;
            node_configs.push(dir.join("node.toml"));
            say(&format!(
                "{name}: {} people with a service conversation each, sealed under their own keys; {} agreed to `train.intent`",
                d.rows.len(),
                d.rows.len() - d.rows.len().div_ceil(10)
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let lab = Lab {
            spec,
            ca_dir,
            coordinator: None,
            coordinator_config,
            coordinator_url: String::new(),
            nodes: (0..data.len()).map(|_| None).collect(),
            node_configs,
            node_urls: vec![String::new(); data.len()],
            witness_key: String::new(),
            rt,
            netns,
        };
        lab.write_coordinator_config(0)?;
        Ok(lab)
    }

    /// Node `i`'s name (`node-a`, `node-b`, …): its certificate name, directory under the
    /// lab's and log file.
    pub fn node_name(&self, i: usize) -> String {
        format!("node-{}", (b'a' + i as u8) as char)
    }

    /// Node `i`'s data directory (`DIR/node-X/data`), initialised and loaded by
    /// [`Lab::create`].
    pub fn node_data_dir(&self, i: usize) -> PathBuf {
        self.spec.dir.join(self.node_name(i)).join("data")
    }

    /// The federation CA's directory (`DIR/ca`): `ca.pem`, `crl.pem`, and `certs/` with the
    /// coordinator's, the nodes', `admin`'s and `auditor`'s certificates and keys.
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }

    /// The coordinator's witness key (C2SP verifier string), once it has started.
    pub fn witness_key(&self) -> &str {
        &self.witness_key
    }

    /// `https://ADDR:PORT` of the coordinator (or of the relay set by
    /// [`Lab::route_nodes_through`]); empty until it has first started.
    pub fn coordinator_url(&self) -> &str {
        &self.coordinator_url
    }

    /// `https://ADDR:PORT` of node `i`; empty until it has first started. Panics if there is no
    /// node `i`.
    pub fn node_url(&self, i: usize) -> &str {
        &self.node_urls[i]
    }

    /// The coordinator's data directory (`DIR/coordinator-data`), named in its config.
    pub fn coordinator_data_dir(&self) -> PathBuf {
        self.spec.dir.join("coordinator-data")
    }

    /// The PEM certificate and key of a federation participant the lab issued (the
    /// coordinator, a node, the federation's `admin` and `auditor`), and the CA to trust.
    pub fn identity_files(&self, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (c, k) = cert(&self.ca_dir, name);
        (c, k, self.ca_dir.join("ca.pem"))
    }

    /// The organisation CA of node `i` (its apps, admin and auditor).
    pub fn org_ca_dir(&self, i: usize) -> PathBuf {
        self.spec.dir.join(self.node_name(i)).join("org-ca")
    }

    /// The certificate and key of `name` (`app`, `admin`, `auditor`) of node `i`'s
    /// organisation, and the CA to trust for the node (the federation CA signed its
    /// certificate).
    pub fn org_identity_files(&self, i: usize, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        let (c, k) = cert(&self.org_ca_dir(i), name);
        (c, k, self.ca_dir.join("ca.pem"))
    }

    /// A client identity of node `i`'s organisation (`app`, `admin`, `auditor`).
    pub fn org_identity(&self, i: usize, name: &str) -> Result<ClientIdentity> {
        let (c, k, ca) = self.org_identity_files(i, name);
        Ok(ClientIdentity::load(&c, &k, &ca)?)
    }

    fn write_coordinator_config(&self, port: u16) -> Result<()> {
        let s = &self.spec;
        let (c, k) = cert(&self.ca_dir, "coordinator");
        let training = match s.epsilon {
            Some(eps) => format!(
                "mode = \"dp\"\nepsilon = {eps}\ndelta = {}\nsample_rate = {}\nsteps_per_round = {}\nclip_norm = {}\nlearning_rate = {}\naverage_tail = 0.0\n",
                s.delta, s.dp_sample_rate, s.dp_steps_per_round, s.dp_clip_norm, s.dp_learning_rate
            ),
            None => format!(
                "mode = \"plain\"\nepochs = {}\nlearning_rate = 0.5\ndecay = 0.0\n",
                s.local_epochs
            ),
        };
        let host = self.listen_host("coordinator");
        let text = format!(
            "listen = \"{host}:{port}\"\ndata_dir = {:?}\n\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ncrl = {:?}\n\n[federation]\nrounds = {}\nnodes_per_round = {}\nmin_nodes = {}\nround_deadline_secs = {}\nclip_bound = {}\nserver_learning_rate = {}\nserver_final_lr_fraction = {}\n\n[model]\nkind = \"intent\"\nlabels_file = {:?}\nfeatures = {:?}\ndim_log2 = {}\nlabel_prior = {}\n\n[training]\n{training}",
            self.coordinator_data_dir(),
            c,
            k,
            self.ca_dir.join("ca.pem"),
            self.ca_dir.join("crl.pem"),
            s.rounds,
            s.nodes_per_round,
            s.min_nodes,
            s.round_deadline_secs,
            s.clip_bound,
            s.server_learning_rate,
            s.server_final_lr_fraction,
            s.dir.join("labels.json"),
            s.features.as_str(),
            s.dim_log2,
            s.label_prior,
        );
        std::fs::write(&self.coordinator_config, text)?;
        Ok(())
    }

    fn write_node_config(&self, i: usize, port: u16) -> Result<()> {
        let name = self.node_name(i);
        let (c, k) = cert(&self.ca_dir, &name);
        let budget = self.spec.epsilon.unwrap_or(1.0);
        let host = self.listen_host(&name);
        let text = format!(
            "listen = \"{host}:{port}\"\ndata_dir = {:?}\n\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ncrl = {:?}\nfederation_ca = {:?}\nfederation_crl = {:?}\n\n[federation]\ncoordinator = {:?}\nepsilon_budget = {}\ndelta = {}\n",
            self.node_data_dir(i),
            c,
            k,
            self.org_ca_dir(i).join("ca.pem"),
            self.org_ca_dir(i).join("crl.pem"),
            self.ca_dir.join("ca.pem"),
            self.ca_dir.join("crl.pem"),
            self.coordinator_url,
            // Plain plans charge nothing; a DP plan must fit the node's own budget.
            budget * 1.0001,
            self.spec.delta,
        );
        std::fs::write(&self.node_configs[i], text)?;
        Ok(())
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.spec.dir.join("logs").join(format!("{name}.log")))?;
        let mut child = self
            .command(name)
            .arg("--json")
            .args(args)
            .env("RUST_LOG", "info")
            .env("AMBLE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout"))?;
        // The service prints one JSON object (pretty, several lines) once it is listening.
        let first = serde_json::Deserializer::from_reader(BufReader::new(stdout))
            .into_iter::<serde_json::Value>()
            .next();
        let line = format!("{first:?}");
        let v: serde_json::Value = match first {
            Some(Ok(v)) => v,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(self.spec.dir.join("logs").join(format!("{name}.log")))
                        .unwrap_or_default();
                bail!(
                    "{name} did not start; last log lines:\n{}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
                );
            }
        };
        let addr = v["listening"]
            .as_str()
            .ok_or_else(|| anyhow!("{name} printed no address: {line}"))?
            .to_owned();
        Ok(Proc {
            child,
            addr,
            hello: v,
        })
    }

    /// Starts (or restarts, on the same port) the coordinator.
    pub fn start_coordinator(&mut self) -> Result<()> {
        let cfg = self.coordinator_config.to_string_lossy().into_owned();
        let p = self.spawn("coordinator", &["coordinator", "serve", "--config", &cfg])?;
        if self.coordinator_url.is_empty() {
            let port: u16 = p.addr.rsplit(':').next().unwrap_or("0").parse()?;
            // Restarts must come back on the same port: the nodes' configs name it.
            self.write_coordinator_config(port)?;
        }
        self.coordinator_url = format!("https://{}", p.addr);
        self.witness_key = p.hello["witness_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.coordinator = Some(p);
        Ok(())
    }

    /// Nodes started from now on reach the coordinator at `url` instead (a relay, in tests
    /// that cut the link at a chosen moment); `start_coordinator` sets it back.
    pub fn route_nodes_through(&mut self, url: &str) {
        url.clone_into(&mut self.coordinator_url);
    }

    /// Starts (or restarts, on the same port) node `i`.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        if self.coordinator_url.is_empty() {
            bail!("start the coordinator first");
        }
        let port = self.node_urls[i]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0);
        self.write_node_config(i, port)?;
        let cfg = self.node_configs[i].to_string_lossy().into_owned();
        let name = self.node_name(i);
        let p = self.spawn(&name, &["node", "serve", "--config", &cfg])?;
        self.node_urls[i] = format!("https://{}", p.addr);
        self.nodes[i] = Some(p);
        Ok(())
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill_coordinator(&mut self) -> Result<()> {
        if let Some(mut p) = self.coordinator.take() {
            p.child.kill()?;
            p.child.wait()?;
        }
        Ok(())
    }

    /// SIGKILL to node `i` (no flush) and waits for it to exit; nothing if it is not running.
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.nodes[i].take() {
            p.child.kill()?;
            p.child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait: the service flushes and exits.
    pub fn stop_node(&mut self, i: usize) -> Result<()> {
        if let Some(mut p) = self.nodes[i].take() {
            terminate(&mut p.child)?;
        }
        Ok(())
    }

    /// SIGTERM to every running node, then the coordinator, waiting for each to exit (SIGKILL
    /// after 20 s).
    pub fn stop_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.stop_node(i)?;
        }
        if let Some(mut p) = self.coordinator.take() {
            terminate(&mut p.child)?;
        }
        Ok(())
    }

    /// Issues another certificate from the lab's CA (for 127.0.0.1).
    pub fn issue(&self, name: &str, role: &str) -> Result<()> {
        let ca = amble_crypto::pki::Ca::open(&self.ca_dir)?;
        let mut req = amble_crypto::pki::IssueRequest::new(name, role);
        req.ips = vec!["127.0.0.1".parse()?];
        ca.issue(&req)?;
        Ok(())
    }

    /// Revokes `name` and rewrites the CRL (services load it when they start).
    pub fn revoke(&self, name: &str) -> Result<()> {
        let ca = amble_crypto::pki::Ca::open(&self.ca_dir)?;
        ca.revoke(name)?;
        Ok(())
    }

    /// Stops the coordinator with SIGTERM (it flushes and exits).
    pub fn stop_coordinator(&mut self) -> Result<()> {
        if let Some(mut p) = self.coordinator.take() {
            terminate(&mut p.child)?;
        }
        Ok(())
    }

    /// A federation identity the lab issued (`admin`, `auditor`, `node-a`, …).
    pub fn identity(&self, name: &str) -> Result<ClientIdentity> {
        let (c, k, ca) = self.identity_files(name);
        Ok(ClientIdentity::load(&c, &k, &ca)?)
    }

    /// Runs a future on the lab's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The coordinator's status, asked as `admin`.
    pub fn status(&self) -> Result<FederationStatus> {
        let id = self.identity("admin")?;
        let url = self.coordinator_url.clone();
        self.rt.block_on(async move {
            let ch = id.connect(&url).await?;
            let json = pb::federation_client::FederationClient::new(ch)
                .status(pb::StatusRequest {})
                .await?
                .into_inner()
                .status_json;
            Ok(serde_json::from_str(&json)?)
        })
    }

    /// Polls the status until `done` says so, calling `tick` on each poll.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&FederationStatus) -> bool,
        mut tick: impl FnMut(&FederationStatus),
    ) -> Result<FederationStatus> {
        let t0 = Instant::now();
        loop {
            match self.status() {
                Ok(s) => {
                    tick(&s);
                    if done(&s) {
                        return Ok(s);
                    }
                }
                Err(e) if t0.elapsed() > timeout => return Err(e),
                Err(_) => {}
            }
            if t0.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for the federation");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Downloads a global model version as `admin` (checking its SHA-256).
    pub fn fetch_model(&self, version: u64) -> Result<IntentModel> {
        let id = self.identity("admin")?;
        let url = self.coordinator_url.clone();
        self.rt.block_on(async move {
            let ch = id.connect(&url).await?;
            let mut stream = pb::federation_client::FederationClient::new(ch)
                .max_decoding_message_size(16 << 20)
                .fetch_model(pb::FetchModelRequest {
                    model: "intent".into(),
                    version,
                    latest: false,
                })
                .await?
                .into_inner();
            let mut header = None;
            let mut bytes = Vec::new();
            while let Some(c) = stream.message().await? {
                match c.part {
                    Some(pb::model_chunk::Part::Header(h)) => header = Some(h),
                    Some(pb::model_chunk::Part::Data(d)) => bytes.extend_from_slice(&d),
                    None => {}
                }
            }
            let h = header.ok_or_else(|| anyhow!("model stream without a header"))?;
            if amble_crypto::sha256(&bytes).as_slice() != h.sha256 {
                bail!("model version {version} does not match its SHA-256");
            }
            Ok(IntentModel::from_bytes(&bytes)?)
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.nodes.iter_mut().flatten() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if let Some(p) = self.coordinator.as_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

fn terminate(child: &mut Child) -> Result<()> {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !sent {
        child.kill()?;
    }
    let t0 = Instant::now();
    while child.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            child.kill()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait()?;
    Ok(())
}

/// Accuracy of `model` on `test`.
pub fn accuracy(model: &IntentModel, test: &[TextRow]) -> Result<f64> {
    let ex = amble_learn::train::examples_for(model, test)?;
    Ok(model.softmax().accuracy(&ex)?)
}

/// A test set featurised once for every model version of a federation (they share one
/// featuriser; a version with another one is featurised afresh).
pub struct TestSet<'a> {
    rows: &'a [TextRow],
    features: amble_learn::model::FeatureConfig,
    examples: Vec<amble_learn::model::Example>,
}

impl<'a> TestSet<'a> {
    /// Featurises `rows` once with `model`'s featuriser; fails if a row's intent is not one of
    /// the model's labels or the encoder fails.
    pub fn new(model: &IntentModel, rows: &'a [TextRow]) -> Result<Self> {
        Ok(TestSet {
            rows,
            features: model.featuriser().config().clone(),
            examples: amble_learn::train::examples_for(model, rows)?,
        })
    }

    /// Accuracy of `model` on the set.
    pub fn accuracy(&self, model: &IntentModel) -> Result<f64> {
        if model.featuriser().config() == &self.features {
            Ok(model.softmax().accuracy(&self.examples)?)
        } else {
            accuracy(model, self.rows)
        }
    }
}

/// Initialises a node's data directory and loads its people: one service conversation each
/// (the Banking77 text and its resolved intent), a profile, and `train.intent` consent from
/// nine in ten of them.
fn load_node(dir: &Path, node: usize, data: &NodeData, _spec: &LabSpec) -> Result<()> {
    let n = Node::init(dir, None)?;
    let op = Actor::local("operator:lab", Role::Admin);
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let mut batch = Vec::with_capacity(512);
    for (i, row) in data.rows.iter().enumerate() {
        let r = ExternalRef::parse(&person_ref(node, i))?;
        let mut conv = serde_json::Map::new();
        conv.insert("channel".into(), "chat".into());
        conv.insert("text".into(), row.text.clone().into());
        conv.insert("intent".into(), row.label.clone().into());
        conv.insert("outcome".into(), "resolved".into());
        batch.push((
            r.clone(),
            NewRecord {
                collection: Collection::Interactions,
                time: t0 + time::Duration::minutes(i as i64),
                data: conv,
            },
        ));
        let mut profile = serde_json::Map::new();
        profile.insert("birth_year".into(), (1950 + (i % 55) as i64).into());
        profile.insert("language".into(), "en".into());
        batch.push((
            r,
            NewRecord {
                collection: Collection::Profile,
                time: t0,
                data: profile,
            },
        ));
        if batch.len() >= 512 {
            n.append_batch(&op, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        n.append_batch(&op, &batch)?;
    }
    for i in (0..data.rows.len()).filter(|i| i % 10 != 0) {
        n.change_consent(
            &op,
            &ExternalRef::parse(&person_ref(node, i))?,
            "train.intent",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )?;
    }
    n.flush()?;
    Ok(())
}

/// Banking77 prepared for a lab.
pub struct Banking77 {
    /// Each node's share of the training rows.
    pub nodes: Vec<NodeData>,
    /// The test rows (`test.csv`), held out from every node.
    pub test: Vec<TextRow>,
    /// The 77 intents (`categories.json`).
    pub labels: Vec<String>,
}

/// Banking77's training rows split over `nodes` organisations by the vendored Dirichlet(0.5)
/// label split (10 groups, merged round-robin when there are fewer nodes), at most
/// `max_per_node` rows each; the test rows; the intent list.
pub fn banking77(data_dir: &Path, nodes: usize, max_per_node: Option<usize>) -> Result<Banking77> {
    if nodes == 0 || nodes > 10 {
        bail!("the Banking77 split has 10 groups; choose 1 to 10 nodes");
    }
    let train = amble_learn::train::read_intent_csv(&data_dir.join("train.csv"))?;
    let test = amble_learn::train::read_intent_csv(&data_dir.join("test.csv"))?;
    let split =
        amble_learn::experiment::read_split(&data_dir.join("split-10-nodes-dirichlet-0.5.csv"))?;
    let groups = amble_learn::experiment::split_rows(train, &split)?;
    let mut out = vec![NodeData::default(); nodes];
    for (g, rows) in groups.into_iter().enumerate() {
        out[g % nodes].rows.extend(rows);
    }
    if let Some(m) = max_per_node {
        // An evenly spaced subset keeps each node's label mix (its rows are grouped by label).
        for d in &mut out {
            let n = d.rows.len();
            if n > m {
                d.rows = (0..m).map(|k| d.rows[k * n / m].clone()).collect();
            }
        }
    }
    let path = data_dir.join("categories.json");
    let labels: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}: expected a JSON array of intents", path.display()))?;
    Ok(Banking77 {
        nodes: out,
        test,
        labels,
    })
}

// ---------------------------------------------------------------------------------------------
// Network namespaces: the same federation, each participant at an address of its own.

/// How to lay out a lab in network namespaces (Linux, root, iproute2).
///
/// One namespace holds a bridge (`amble-ID-net`); the coordinator and each node get a
/// namespace of their own (`amble-ID-coordinator`, `amble-ID-node-a`, …) with loopback up and
/// an `eth0` whose peer is a port of the bridge. Addresses are in 10.231.X.0/24: `.1` is the
/// root namespace's end of one more veth into the bridge (so the test process reaches every
/// service directly), `.2` the coordinator, `.3`, `.4`, … the nodes. Every certificate carries
/// its participant's address as an IP SAN, every service listens on it and is started with
/// `ip netns exec`. The bridge lives in a namespace of its own so that the host's firewall
/// (e.g. a `FORWARD` policy of `DROP` with `br_netfilter`) never sees the lab's traffic.
#[derive(Debug, Clone, Default)]
pub struct NetnsPlan {
    /// X in 10.231.X.0/24; `None` picks one that no address or route on this host uses.
    pub subnet: Option<u8>,
}

/// Whether this process can build a lab in network namespaces: root, `ip` (iproute2), and
/// `ip netns add` works. The error says what is missing.
pub fn netns_available() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("network namespaces need root (effective uid {euid:?})");
    }
    let probe = format!("amble-{}-probe", random_id()?);
    ip(&["netns", "add", &probe])?;
    ip(&["netns", "del", &probe])?;
    Ok(())
}

/// One participant of a namespaced lab.
#[derive(Debug)]
struct NetnsMember {
    /// `coordinator`, `node-a`, …
    name: String,
    /// Its namespace.
    ns: String,
    /// Its veth's peer in the bridge namespace: the link [`Lab::cut_link`] takes down.
    port: String,
    address: std::net::Ipv4Addr,
}

/// The namespaces and links of one lab; deleted on drop, whatever happened before.
#[derive(Debug)]
pub struct Netns {
    prefix: String,
    subnet: u8,
    /// The namespace with the bridge.
    hub: String,
    /// The root namespace's link to the bridge.
    root_link: String,
    members: Vec<NetnsMember>,
    /// Namespaces and root-namespace links created so far, for the cleanup.
    created_ns: Vec<String>,
    created_root_link: bool,
}

/// Serialises the choice of a free subnet among labs of this process (tests run in parallel).
static NETNS_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn node_name(i: usize) -> String {
    format!("node-{}", (b'a' + i as u8) as char)
}

/// Six random hex digits: namespace and link names unique per lab.
fn random_id() -> Result<String> {
    let mut b = [0u8; 3];
    amble_crypto::random_bytes(&mut b)?;
    Ok(hex::encode(b))
}

/// Runs `ip ARGS`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Netns {
    /// Creates the bridge, the root namespace's link and one namespace per name.
    pub fn create(plan: &NetnsPlan, names: &[String]) -> Result<Netns> {
        if names.len() > 250 {
            bail!("a /24 holds at most 250 participants");
        }
        let _guard = NETNS_SETUP.lock().unwrap_or_else(|e| e.into_inner());
        let id = random_id()?;
        let prefix = format!("amble-{id}");
        let subnet = match plan.subnet {
            Some(x) => x,
            None => {
                let used = format!(
                    "{}\n{}",
                    ip(&["-4", "-o", "addr", "show"])?,
                    ip(&["-4", "route", "show", "table", "all"])?
                );
                let start = u8::from_str_radix(&id[..2], 16)?;
                (0..=255u8)
                    .map(|k| start.wrapping_add(k))
                    .find(|x| !used.contains(&format!("10.231.{x}.")))
                    .ok_or_else(|| anyhow!("every 10.231.X.0/24 is in use on this host"))?
            }
        };
        let addr = |host: usize| std::net::Ipv4Addr::new(10, 231, subnet, host as u8);
        let mut n = Netns {
            hub: format!("{prefix}-net"),
            root_link: prefix.clone(),
            members: names
                .iter()
                .enumerate()
                .map(|(k, name)| NetnsMember {
                    name: name.clone(),
                    ns: format!("{prefix}-{name}"),
                    port: format!("veth{k}"),
                    address: addr(k + 2),
                })
                .collect(),
            prefix,
            subnet,
            created_ns: Vec::new(),
            created_root_link: false,
        };
        // On any error `n` drops here and deletes what was made.
        let hub = n.hub.clone();
        n.add_ns(&hub)?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "dev", "br0", "up"])?;
        // The root namespace's end: `amble-ID` here, `host` in the bridge.
        let root = n.root_link.clone();
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        n.created_root_link = true;
        ip(&[
            "-n", &hub, "link", "set", "dev", "host", "master", "br0", "up",
        ])?;
        ip(&["addr", "add", &format!("{}/24", addr(1)), "dev", &root])?;
        ip(&["link", "set", "dev", &root, "up"])?;
        for k in 0..n.members.len() {
            let (ns, port, a) = {
                let m = &n.members[k];
                (m.ns.clone(), m.port.clone(), m.address)
            };
            n.add_ns(&ns)?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&[
                "-n", &hub, "link", "set", "dev", &port, "master", "br0", "up",
            ])?;
            ip(&["-n", &ns, "addr", "add", &format!("{a}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "dev", "eth0", "up"])?;
        }
        Ok(n)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.created_ns.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        Ok(())
    }

    fn member(&self, name: &str) -> Result<&NetnsMember> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow!("no participant {name:?} in the lab's namespaces"))
    }

    /// `amble-ID`: every namespace's name starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's subnet, `10.231.X.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.231.{}.0/24", self.subnet)
    }

    /// The address of participant `name`.
    pub fn address(&self, name: &str) -> Option<std::net::Ipv4Addr> {
        self.member(name).ok().map(|m| m.address)
    }

    /// The namespace participant `name` runs in.
    pub fn namespace(&self, name: &str) -> Option<&str> {
        self.member(name).ok().map(|m| m.ns.as_str())
    }

    /// Takes the bridge's end of the participant's veth down (`up = false`) or up again:
    /// while down, every packet to or from it is silently dropped, as with a pulled cable,
    /// and its process notices only through timeouts.
    pub fn set_link(&self, name: &str, up: bool) -> Result<()> {
        let m = self.member(name)?;
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            "dev",
            &m.port,
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the bridge's namespace destroys every veth pair with an end in it; the
        // explicit deletes make sure nothing is left if that happens asynchronously.
        if self.created_root_link {
            let _ = ip(&["link", "del", "dev", &self.root_link]);
        }
        for ns in self.created_ns.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Lab {
    /// The address participant `name` (`coordinator`, `node-a`, …) listens on:
    /// 127.0.0.1, or its own in a namespaced lab.
    pub fn address(&self, name: &str) -> std::net::IpAddr {
        match self.netns.as_ref().and_then(|n| n.address(name)) {
            Some(a) => a.into(),
            None => std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }

    /// The namespaces, when the lab runs in them.
    pub fn netns(&self) -> Option<&Netns> {
        self.netns.as_ref()
    }

    /// Cuts participant `name`'s network link (`ip link set VETH down` on the bridge side).
    pub fn cut_link(&self, name: &str) -> Result<()> {
        self.netns
            .as_ref()
            .ok_or_else(|| anyhow!("only a lab in network namespaces has links to cut"))?
            .set_link(name, false)
    }

    /// Restores a link [`Lab::cut_link`] cut.
    pub fn restore_link(&self, name: &str) -> Result<()> {
        self.netns
            .as_ref()
            .ok_or_else(|| anyhow!("only a lab in network namespaces has links to restore"))?
            .set_link(name, true)
    }

    fn listen_host(&self, name: &str) -> String {
        self.address(name).to_string()
    }

    /// `amble`, or `ip netns exec NS amble` for a participant with a namespace of its own.
    fn command(&self, name: &str) -> Command {
        match self.netns.as_ref().and_then(|n| n.namespace(name)) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.spec.bin);
                c
            }
            None => Command::new(&self.spec.bin),
        }
    }
}
