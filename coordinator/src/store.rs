//! The coordinator's storage seam: the only file of the crate that knows its engine (sled).
//!
//! What the state machine needs, in typed slots: the plan it was started with, the round
//! state, the model versions, the members, the spooled update blocks, the receipts (each an
//! acceptance) and the published rounds' summaries, plus a durable flush and the audit log
//! kept in the same database. Keys:
//!
//! | tree       | key                               | value                         |
//! |------------|-----------------------------------|-------------------------------|
//! | `meta`     | `plan`, `round_state`             | JSON                          |
//! | `models`   | version (u64 BE)                  | the model's bytes             |
//! | `members`  | node id                           | JSON [`Member`]               |
//! | `spool`    | round (u64 BE) ‖ node ‖ 0 ‖ block (u32 BE) | little-endian f32 values |
//! | `receipts` | round (u64 BE) ‖ node ‖ 0         | JSON [`Acceptance`]              |
//! | `history`  | round (u64 BE)                    | JSON [`RoundSummary`]         |
//! | `velocity` | version (u64 BE)                  | the server's momentum after it, little-endian f32 |
//!
//! A second engine (a SQL database shared by replicas, see `docs/ARCHITECTURE.md`) would
//! implement these same methods; nothing above this file would change.

use crate::config::Plan;
use crate::state::{Acceptance, Member, RoundState, RoundSummary};
use crate::{CoordinatorError, Result};
use amble_audit::AuditLog;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The engine's errors, told without its types.
impl From<sled::Error> for CoordinatorError {
    fn from(e: sled::Error) -> Self {
        CoordinatorError::Store(e.into())
    }
}

const PLAN_KEY: &str = "plan";
const STATE_KEY: &str = "round_state";

/// The coordinator's database.
pub(crate) struct Store {
    db: sled::Db,
    meta: sled::Tree,
    models: sled::Tree,
    members: sled::Tree,
    spool: sled::Tree,
    receipts: sled::Tree,
    history: sled::Tree,
    velocity: sled::Tree,
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| CoordinatorError::Corrupt(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(b: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| CoordinatorError::Corrupt(format!("{what}: {e}")))
}

fn round_node_key(round: u64, node: &str) -> Vec<u8> {
    let mut k = round.to_be_bytes().to_vec();
    k.extend_from_slice(node.as_bytes());
    k.push(0);
    k
}

fn spool_key(round: u64, node: &str, block: u32) -> Vec<u8> {
    let mut k = round_node_key(round, node);
    k.extend_from_slice(&block.to_be_bytes());
    k
}

fn decode_block(bytes: &[u8]) -> Result<Vec<f32>> {
    amble_learn::federation::f32_from_le(bytes)
        .map_err(|e| CoordinatorError::Corrupt(format!("spooled block: {e}")))
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Store> {
        let db = sled::open(dir)?;
        Ok(Store {
            meta: db.open_tree("meta")?,
            models: db.open_tree("models")?,
            members: db.open_tree("members")?,
            spool: db.open_tree("spool")?,
            receipts: db.open_tree("receipts")?,
            history: db.open_tree("history")?,
            velocity: db.open_tree("velocity")?,
            db,
        })
    }

    /// The coordinator's audit log, kept in the same database.
    pub(crate) fn audit_log(&self) -> Result<AuditLog> {
        Ok(AuditLog::open(&self.db)?)
    }

    /// Makes every write so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub(crate) fn plan(&self) -> Result<Option<Plan>> {
        self.meta
            .get(PLAN_KEY)?
            .map(|b| from_json(&b, "stored plan"))
            .transpose()
    }

    pub(crate) fn set_plan(&self, plan: &Plan) -> Result<()> {
        self.meta.insert(PLAN_KEY, json(plan)?)?;
        Ok(())
    }

    pub(crate) fn round_state(&self) -> Result<Option<RoundState>> {
        self.meta
            .get(STATE_KEY)?
            .map(|b| from_json(&b, "round state"))
            .transpose()
    }

    pub(crate) fn set_round_state(&self, state: &RoundState) -> Result<()> {
        self.meta.insert(STATE_KEY, json(state)?)?;
        Ok(())
    }

    /// A model version's bytes.
    pub(crate) fn model(&self, version: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.models.get(version.to_be_bytes())?.map(|b| b.to_vec()))
    }

    pub(crate) fn has_model(&self, version: u64) -> Result<bool> {
        Ok(self.models.contains_key(version.to_be_bytes())?)
    }

    pub(crate) fn set_model(&self, version: u64, bytes: Vec<u8>) -> Result<()> {
        self.models.insert(version.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// The server's momentum after model `version` was published (empty without momentum).
    pub(crate) fn velocity(&self, version: u64) -> Result<Vec<f32>> {
        match self.velocity.get(version.to_be_bytes())? {
            Some(b) => amble_learn::federation::f32_from_le(&b)
                .map_err(|e| CoordinatorError::Corrupt(format!("server velocity: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn set_velocity(&self, version: u64, velocity: &[f32]) -> Result<()> {
        if !velocity.is_empty() {
            self.velocity.insert(
                version.to_be_bytes(),
                amble_learn::federation::f32_to_le(velocity),
            )?;
        }
        Ok(())
    }

    pub(crate) fn member(&self, id: &str) -> Result<Option<Member>> {
        self.members
            .get(id)?
            .map(|b| from_json(&b, "member"))
            .transpose()
    }

    pub(crate) fn put_member(&self, member: &Member) -> Result<()> {
        self.members.insert(member.id.as_bytes(), json(member)?)?;
        Ok(())
    }

    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every member, by id.
    pub(crate) fn members(&self) -> Result<Vec<Member>> {
        self.members
            .iter()
            .map(|kv| {
                kv.map_err(CoordinatorError::from)
                    .and_then(|(_, v)| from_json(&v, "member"))
            })
            .collect()
    }

    /// Spools block `block` of `node`'s update for `round`.
    pub(crate) fn spool_block(
        &self,
        round: u64,
        node: &str,
        block: u32,
        values: &[f32],
    ) -> Result<()> {
        self.spool.insert(
            spool_key(round, node, block),
            amble_learn::federation::f32_to_le(values),
        )?;
        Ok(())
    }

    /// Calls `each` with the spooled blocks of `node`'s update for `round`, in order.
    pub(crate) fn for_each_spooled_block(
        &self,
        round: u64,
        node: &str,
        mut each: impl FnMut(Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        for kv in self.spool.scan_prefix(round_node_key(round, node)) {
            let (_, v) = kv?;
            each(decode_block(&v)?)?;
        }
        Ok(())
    }

    /// Reads spooled block `block` of `node`'s update for `round` into `buf`.
    pub(crate) fn read_spooled_block(
        &self,
        round: u64,
        node: &str,
        block: u32,
        buf: &mut [f32],
    ) -> Result<()> {
        let bytes = self
            .spool
            .get(spool_key(round, node, block))?
            .ok_or_else(|| CoordinatorError::Corrupt("spooled block missing".into()))?;
        amble_learn::federation::f32_decode_into(&bytes, buf)
            .map_err(|e| CoordinatorError::Corrupt(e.to_string()))
    }

    /// The nodes with spooled blocks for `round`, with how many blocks each has.
    pub(crate) fn spooled_nodes(&self, round: u64) -> Result<BTreeMap<String, usize>> {
        let mut nodes = BTreeMap::new();
        for kv in self.spool.scan_prefix(round.to_be_bytes()) {
            let (k, _) = kv?;
            let node_bytes = k.get(8..k.len().saturating_sub(5)).unwrap_or_default();
            let node = String::from_utf8_lossy(node_bytes).into_owned();
            *nodes.entry(node).or_insert(0) += 1;
        }
        Ok(nodes)
    }

    /// Drops the spooled blocks of `node`'s update for `round`.
    pub(crate) fn clear_spool_of(&self, round: u64, node: &str) -> Result<()> {
        self.clear_prefix(&round_node_key(round, node))
    }

    /// Drops every spooled block of `round`.
    pub(crate) fn clear_spool(&self, round: u64) -> Result<()> {
        self.clear_prefix(&round.to_be_bytes())
    }

    fn clear_prefix(&self, prefix: &[u8]) -> Result<()> {
        for kv in self.spool.scan_prefix(prefix) {
            let (k, _) = kv?;
            self.spool.remove(k)?;
        }
        Ok(())
    }

    /// Writes a receipt: the acceptance of an update (durable once [`Store::flush`] returns).
    pub(crate) fn put_receipt(&self, receipt: &Acceptance) -> Result<()> {
        self.receipts
            .insert(round_node_key(receipt.round, &receipt.node), json(receipt)?)?;
        Ok(())
    }

    /// The receipts of `round`, by node.
    pub(crate) fn receipts_of(&self, round: u64) -> Result<Vec<Acceptance>> {
        self.receipts
            .scan_prefix(round.to_be_bytes())
            .map(|kv| {
                kv.map_err(CoordinatorError::from)
                    .and_then(|(_, v)| from_json(&v, "receipt"))
            })
            .collect()
    }

    /// The first receipt, in round order, for which `matches` holds.
    pub(crate) fn find_receipt(
        &self,
        matches: impl Fn(&Acceptance) -> bool,
    ) -> Result<Option<Acceptance>> {
        for kv in self.receipts.iter() {
            let (_, v) = kv?;
            let r: Acceptance = from_json(&v, "receipt")?;
            if matches(&r) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    pub(crate) fn put_round_summary(&self, summary: &RoundSummary) -> Result<()> {
        self.history
            .insert(summary.round.to_be_bytes(), json(summary)?)?;
        Ok(())
    }

    /// The published rounds' summaries, in round order.
    pub(crate) fn round_summaries(&self) -> Result<Vec<RoundSummary>> {
        self.history
            .iter()
            .map(|kv| {
                kv.map_err(CoordinatorError::from)
                    .and_then(|(_, v)| from_json(&v, "round summary"))
            })
            .collect()
    }
}
