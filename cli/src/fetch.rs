//! Fetching a running service's audit log over mutual TLS into the folder format that
//! `amble audit verify` reads. Nodes and the coordinator serve the same `Audit` service.

use amble_proto::v1 as pb;
use anyhow::{Context, Result, bail};
use std::path::Path;
use tonic::transport::Channel;

/// What was fetched.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    /// Log entries written to the entries file: the tree size of the fetched checkpoint.
    pub entries: u64,
    /// Whether the export carries a witness-cosigned checkpoint.
    pub witnessed: bool,
}

/// Fetches the whole log behind `channel` into `dir` (entries, checkpoint, log key and, when
/// the service has one, the witnessed checkpoint).
pub async fn fetch_log(channel: Channel, dir: &Path) -> Result<Fetched> {
    let mut c = pb::audit_client::AuditClient::new(channel).max_decoding_message_size(64 << 20);
    let cp = c
        .checkpoint(pb::CheckpointRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("checkpoint: {}", s.message()))?
        .into_inner();
    if cp.first_kept > 0 {
        bail!(
            "the log was pruned before entry {}; fetching a pruned log over gRPC is not supported yet — run `amble audit export` on the node",
            cp.first_kept
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut lines = Vec::new();
    let mut start = 0;
    while start < cp.size {
        let end = (start + 1000).min(cp.size);
        let page = c
            .entries(pb::EntriesRequest { start, end })
            .await
            .map_err(|s| anyhow::anyhow!("entries: {}", s.message()))?
            .into_inner();
        if page.entries.len() as u64 != end - start {
            bail!(
                "the service sent {} entries for [{start}, {end})",
                page.entries.len()
            );
        }
        for e in page.entries {
            lines.extend_from_slice(&e);
            lines.push(b'\n');
        }
        start = end;
    }
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    };
    write(amble_audit::ENTRIES_FILE, &lines)?;
    write(amble_audit::CHECKPOINT_FILE, cp.checkpoint.as_bytes())?;
    write(
        amble_audit::LOG_KEY_FILE,
        format!("{}\n", cp.log_key).as_bytes(),
    )?;
    let witnessed = !cp.witnessed.is_empty();
    if witnessed {
        write(amble_audit::WITNESSED_FILE, cp.witnessed.as_bytes())?;
    }
    Ok(Fetched {
        entries: cp.size,
        witnessed,
    })
}
