//! The stored log: entries, hashes and the subject index, kept by a [`LogStore`] (sled in the
//! node's and the coordinator's own database, see [`crate::store`]).
//!
//! Every subtree hash is written once, when its last leaf arrives (on average two writes per
//! append), so proofs are O(log n) lookups and pruning entries never loses a hash.
//!
//! **Crash safety.** One append (or one batch) is one atomic commit, so an entry and its
//! hashes land together or not at all. `append` does not flush; `append_durable` and
//! `append_batch` do. The node appends the entry that describes a change *before* it writes
//! the change, to the same sled `Db`: sled recovers a prefix of its write log after a crash, so
//! data can never survive without the entry that describes it (an entry can survive without its
//! data — an access that was logged but did not complete, which is the safe direction).
//!
//! **Time.** Entries are stamped by the log's [`Clock`] (the system's unless the service
//! injected its own with [`AuditLog::with_clock`]), so a test that moves the service's clock
//! moves its audit entries with it.
//!
//! **Concurrency.** Open one `AuditLog` per database and share it (e.g. in an `Arc`); a second
//! instance on the same database is detected at its first conflicting append and refused.
//! The append path holds one mutex: seqs are handed out, hashed and committed
//! in order, and the in-memory frontier advances only after a commit succeeds. Concurrent
//! `append_durable` callers share flushes (group commit). Proofs and reads take the lock
//! only to snapshot the frontier; the hashes they use are immutable once written.

use crate::clock::Clock;
use crate::entry::{Entry, EntryDraft};
use crate::error::{AuditError, ProofError};
use crate::hash::{Hash, leaf_hash};
use crate::note::{Checkpoint, NoteSigner};
use crate::proof::{ConsistencyProof, InclusionProof};
use crate::store::{Batch, LogStore};
use crate::tree::{Frontier, PerfectNodes, consistency_path, inclusion_path, range_hash};
use amble_crypto::{SigningKey, SubjectId};
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use time::OffsetDateTime;

/// Perfect-subtree hashes at this level and above are also kept in memory: one per 4096
/// entries (16 MB per billion), and they are the nodes every proof touches.
const CACHED_FROM_LEVEL: u8 = 12;

struct State {
    frontier: Frontier,
    pruned_before: u64,
}

/// The node's audit log. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct AuditLog {
    store: Box<dyn LogStore>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Group commit: the log size known to be on disk, and a lock so one flusher runs at a
    /// time while later durable appenders wait and then find themselves already covered.
    flushed: Mutex<u64>,
    /// `top[l - CACHED_FROM_LEVEL][i]`: stored hashes of the upper levels, in memory.
    top: RwLock<Vec<Vec<Hash>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog(size {})", self.size())
    }
}

impl AuditLog {
    /// The log kept by `store`, stamping entries by the system clock; rebuilds the in-memory
    /// frontier from the stored hashes (O(log n) reads).
    pub fn over(store: Box<dyn LogStore>) -> Result<AuditLog, AuditError> {
        let size = store.leaf_count()?;
        let pruned_before = store.pruned_before()?;
        let log = AuditLog {
            store,
            clock: crate::clock::system(),
            state: Mutex::new(State {
                frontier: Frontier::new(),
                pruned_before,
            }),
            flushed: Mutex::new(0),
            top: RwLock::new(Vec::new()),
        };
        {
            let mut top = log.top.write().map_err(|_| AuditError::Poisoned)?;
            log.store
                .nodes_from(CACHED_FROM_LEVEL, &mut |level, index, hash| {
                    push_top(&mut top, level, index, hash)
                })?;
        }
        let peaks = Frontier::peak_positions(size)
            .into_iter()
            .map(|(l, i)| log.perfect(l, i))
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_peaks(size, peaks)?;
        if size > pruned_before && log.store.body(size - 1)?.is_none() {
            return Err(AuditError::Corrupt(format!(
                "hashes cover {size} entries but entry {} is missing",
                size - 1
            )));
        }
        log.lock()?.frontier = frontier;
        Ok(log)
    }

    /// The same log, stamping new entries by `clock` (the service's injected clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, AuditError> {
        self.state.lock().map_err(|_| AuditError::Poisoned)
    }

    /// Number of entries ever appended (pruned ones included).
    pub fn size(&self) -> u64 {
        self.lock().map(|s| s.frontier.size()).unwrap_or(0)
    }

    /// Root hash of the whole log.
    pub fn root(&self) -> Result<Hash, AuditError> {
        Ok(self.lock()?.frontier.root())
    }

    /// Size and root read together.
    pub fn head(&self) -> Result<(u64, Hash), AuditError> {
        let st = self.lock()?;
        Ok((st.frontier.size(), st.frontier.root()))
    }

    /// Root hash of the log as it was at `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        let view = self.view()?;
        view.check_size(size)?;
        range_hash(&view, 0, size)
    }

    /// The first seq whose entry body is still stored.
    pub fn first_kept(&self) -> Result<u64, AuditError> {
        Ok(self.lock()?.pruned_before)
    }

    /// Appends one entry; returns its seq. Written but not flushed: call [`AuditLog::flush`]
    /// (or use [`AuditLog::append_durable`]) before acknowledging anything that depends on it.
    pub fn append(&self, draft: EntryDraft) -> Result<u64, AuditError> {
        let range = self.append_many(vec![draft], self.clock.now())?;
        Ok(range.start)
    }

    /// Appends several entries in one commit without flushing: for callers that write the
    /// data the entries describe into the same database next and flush once for both (sled
    /// recovers a prefix of its log, so the data cannot outlive its entries).
    pub fn append_many_unflushed(
        &self,
        drafts: Vec<EntryDraft>,
    ) -> Result<std::ops::Range<u64>, AuditError> {
        self.append_many(drafts, self.clock.now())
    }

    /// Appends one entry and returns its seq once it is on disk.
    ///
    /// Concurrent callers share flushes (group commit): while one flush runs, later appends
    /// queue behind it and the next flush covers all of them.
    pub fn append_durable(&self, draft: EntryDraft) -> Result<u64, AuditError> {
        let seq = self.append(draft)?;
        self.flush_through(seq + 1)?;
        Ok(seq)
    }

    /// Appends several entries in one transaction and returns their seqs once they are on
    /// disk (one flush, shared with concurrent durable appenders).
    pub fn append_batch(
        &self,
        drafts: Vec<EntryDraft>,
    ) -> Result<std::ops::Range<u64>, AuditError> {
        let range = self.append_many(drafts, self.clock.now())?;
        self.flush_through(range.end)?;
        Ok(range)
    }

    /// Flushes the whole database (the log and anything written with it) to disk.
    pub fn flush(&self) -> Result<(), AuditError> {
        let size = self.size();
        let mut flushed = self.flushed.lock().map_err(|_| AuditError::Poisoned)?;
        self.store.flush()?;
        *flushed = (*flushed).max(size);
        Ok(())
    }

    /// Makes sure the first `size` entries are on disk, flushing only if no flush that
    /// started after they were written has finished yet.
    fn flush_through(&self, size: u64) -> Result<(), AuditError> {
        let mut flushed = self.flushed.lock().map_err(|_| AuditError::Poisoned)?;
        if *flushed >= size {
            return Ok(());
        }
        // Everything appended before this point is covered by the flush below.
        let covered = self.size();
        self.store.flush()?;
        *flushed = (*flushed).max(covered);
        Ok(())
    }

    fn append_many(
        &self,
        drafts: Vec<EntryDraft>,
        now: OffsetDateTime,
    ) -> Result<std::ops::Range<u64>, AuditError> {
        let mut st = self.lock()?;
        let start = st.frontier.size();
        if drafts.is_empty() {
            return Ok(start..start);
        }
        let mut frontier = st.frontier.clone();
        let mut p = Batch::default();
        for d in drafts {
            let seq = frontier.size();
            let entry = d.into_entry(seq, now);
            let bytes = entry.to_canonical_json()?;
            let nodes = &mut p.nodes;
            frontier.push(leaf_hash(&bytes), |l, i, h| nodes.push((l, i, *h)));
            if let Some(s) = entry.subject {
                p.subjects.push((s, seq));
            }
            p.entries.push((seq, bytes));
        }
        // Seqs come from this instance's frontier; if the first leaf slot is taken, another
        // `AuditLog` on the same storage got there first, and the store refuses the batch.
        self.store.commit(start, &p)?;
        let end = frontier.size();
        st.frontier = frontier;
        let mut top = self.top.write().map_err(|_| AuditError::Poisoned)?;
        for (l, i, h) in p.nodes.iter().filter(|n| n.0 >= CACHED_FROM_LEVEL) {
            push_top(&mut top, *l, *i, *h)?;
        }
        Ok(start..end)
    }

    /// The entry with this seq.
    pub fn entry(&self, seq: u64) -> Result<Entry, AuditError> {
        match self.store.body(seq)? {
            Some(b) => Ok(Entry::from_canonical_json(&b)?),
            None if seq < self.first_kept()? => Err(AuditError::Pruned(seq)),
            None => Err(AuditError::NoSuchEntry(seq)),
        }
    }

    /// Stored entries with seqs in `range` (pruned ones are simply absent).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        self.for_each_raw(range, |_, b| {
            out.push(Entry::from_canonical_json(b)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams stored entry bodies (canonical bytes) with seqs in `range` to `f`.
    pub(crate) fn for_each_raw(
        &self,
        range: impl RangeBounds<u64>,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let (from, to) = half_open(range);
        self.store.bodies(from, to, &mut |seq, body| {
            f(seq, body)?;
            Ok(true)
        })
    }

    /// Every stored entry about `subject`, in seq order.
    pub fn entries_for_subject(&self, subject: &SubjectId) -> Result<Vec<Entry>, AuditError> {
        let mut out = Vec::new();
        for seq in self.store.subject_seqs(subject)? {
            if let Some(b) = self.store.body(seq)? {
                out.push(Entry::from_canonical_json(&b)?);
            }
        }
        Ok(out)
    }

    /// Leaf hash of entry `seq` (kept after pruning).
    pub fn leaf_hash(&self, seq: u64) -> Result<Hash, AuditError> {
        self.check_size(seq.saturating_add(1))?;
        self.perfect(0, seq)
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let tree_size = self.size();
        if size > tree_size {
            return Err(ProofError::BeyondTree { size, tree_size }.into());
        }
        Ok(())
    }

    /// A read view that answers the current frontier's peaks from memory.
    fn view(&self) -> Result<View<'_>, AuditError> {
        Ok(View {
            log: self,
            frontier: self.lock()?.frontier.clone(),
        })
    }

    /// Inclusion proof of entry `index` in the tree of the first `tree_size` entries.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, AuditError> {
        let view = self.view()?;
        view.check_size(tree_size)?;
        let proof = inclusion_path(&view, index, tree_size)?;
        Ok(InclusionProof {
            leaf_index: index,
            tree_size,
            leaf_hash: view.perfect(0, index)?,
            root_hash: range_hash(&view, 0, tree_size)?,
            proof,
        })
    }

    /// Consistency proof between the trees of the first `old` and `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, AuditError> {
        let view = self.view()?;
        view.check_size(new)?;
        let proof = consistency_path(&view, old, new)?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            old_root: range_hash(&view, 0, old)?,
            new_root: range_hash(&view, 0, new)?,
            proof,
        })
    }

    /// [`AuditLog::inclusion_proof`] as JSON (`leaf_index`, `tree_size`, `leaf_hash`,
    /// `root_hash`, `proof`; hashes in standard base64).
    pub fn inclusion_proof_json(&self, index: u64, tree_size: u64) -> Result<String, AuditError> {
        Ok(self.inclusion_proof(index, tree_size)?.to_json())
    }

    /// [`AuditLog::consistency_proof`] as JSON (`old_size`, `new_size`, `old_root`,
    /// `new_root`, `proof`; hashes in standard base64).
    pub fn consistency_proof_json(&self, old: u64, new: u64) -> Result<String, AuditError> {
        Ok(self.consistency_proof(old, new)?.to_json())
    }

    /// A signed C2SP checkpoint of the current tree, signed by `key` under the name `origin`.
    pub fn checkpoint(&self, key: &SigningKey, origin: &str) -> Result<String, AuditError> {
        let (size, root) = self.head()?;
        let signer = NoteSigner::from_key(origin, key)?;
        Ok(Checkpoint::new(origin, size, root)?.sign(&signer)?)
    }

    /// Retention: deletes entry bodies (and their subject-index rows) with seq < `seq`,
    /// keeping every hash, so roots and proofs are unchanged. Returns how many entries were
    /// removed. `seq` beyond the log is clamped to its size; pruning never moves backwards.
    pub fn prune_before(&self, seq: u64) -> Result<u64, AuditError> {
        let mut st = self.lock()?;
        let target = seq.min(st.frontier.size());
        if target <= st.pruned_before {
            return Ok(0);
        }
        // Record the new boundary first: a crash halfway leaves bodies that are merely
        // unreachable by the export, never an export that claims entries it lacks; the next
        // prune scans from seq 0 and removes such leftovers.
        self.store.set_pruned_before(target)?;
        const CHUNK: usize = 10_000;
        let mut removed = 0u64;
        let mut from = 0u64;
        loop {
            let mut chunk: Vec<(u64, Option<SubjectId>)> = Vec::with_capacity(CHUNK);
            self.store.bodies(from, target, &mut |seq, body| {
                let subject = Entry::from_canonical_json(body)
                    .ok()
                    .and_then(|e| e.subject);
                chunk.push((seq, subject));
                Ok(chunk.len() < CHUNK)
            })?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            self.store.remove(&chunk)?;
            removed += chunk.len() as u64;
            if chunk.len() < CHUNK {
                break;
            }
            from = last + 1;
        }
        st.pruned_before = target;
        drop(st);
        self.flush()?;
        Ok(removed)
    }
}

/// `range` as `from..to`, with an unbounded end as `u64::MAX` (a seq the log never reaches).
fn half_open(range: impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

fn push_top(top: &mut Vec<Vec<Hash>>, level: u8, index: u64, hash: Hash) -> Result<(), AuditError> {
    let l = usize::from(level - CACHED_FROM_LEVEL);
    while top.len() <= l {
        top.push(Vec::new());
    }
    if index != top[l].len() as u64 {
        return Err(AuditError::Corrupt(format!(
            "hashes at level {level} are not contiguous at index {index}"
        )));
    }
    top[l].push(hash);
    Ok(())
}

/// The log plus a snapshot of its frontier: peaks and the upper levels come from memory,
/// the rest from the store.
struct View<'a> {
    log: &'a AuditLog,
    frontier: Frontier,
}

impl View<'_> {
    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let tree_size = self.frontier.size();
        if size > tree_size {
            return Err(ProofError::BeyondTree { size, tree_size }.into());
        }
        Ok(())
    }
}

impl PerfectNodes for View<'_> {
    type Error = AuditError;
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        let size = self.frontier.size();
        if level < 64 && (size >> level) & 1 == 1 && index == (size >> level) - 1 {
            let pos = if level == 63 {
                0
            } else {
                (size >> (level + 1)).count_ones() as usize
            };
            if let Some(h) = self.frontier.peaks().get(pos) {
                return Ok(*h);
            }
        }
        self.log.perfect(level, index)
    }
}

impl PerfectNodes for AuditLog {
    type Error = AuditError;
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        if level >= CACHED_FROM_LEVEL {
            let top = self.top.read().map_err(|_| AuditError::Poisoned)?;
            let cached = top
                .get(usize::from(level - CACHED_FROM_LEVEL))
                .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)));
            if let Some(h) = cached {
                return Ok(*h);
            }
        }
        Ok(self
            .store
            .node(level, index)?
            .ok_or(ProofError::MissingNode { level, index })?)
    }
}
