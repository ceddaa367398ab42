//! Backup and restore of a node's database as one signed, self-describing file.
//!
//! A backup holds every tree of the node's database exactly as stored — records and consent
//! still sealed under each person's data key, data keys still wrapped under the node master
//! key, the ε ledger, models and the audit log — and the policy file. It never holds the key
//! file: without it a backup opens nothing, so the two are kept apart.
//!
//! # Format `amble-backup/v1`
//!
//! ```text
//! magic    "amble-backup/v1\n"                                   16 bytes
//! hlen     u32, big-endian
//! header   JSON, hlen bytes: format, store format, creation time, node origin and
//!          public key, master-key version, audit log size and root, policy text,
//!          and every tree with its entry count, in body order
//! body     per tree: 0x01 ‖ name_len u16 ‖ name ‖ entries u64,
//!          then `entries` times 0x02 ‖ key_len u32 ‖ key ‖ value_len u32 ‖ value;
//!          after the last tree 0x00
//! trailer  content root (32) ‖ Ed25519 signature (64) over "amble/backup/v1\n" ‖ root
//! ```
//!
//! Integers are big-endian. The *content root* is the RFC 9162 Merkle tree hash (SHA-256,
//! the audit log's tree) over every byte before the trailer, cut into 64 KiB leaves: it is
//! computed while streaming, and a truncated or edited file no longer matches it. The node's
//! signature over it tells a restore that the file comes from the node whose key file it was
//! given, and is checked before anything is written.
//!
//! # Erased people stay erased
//!
//! A backup taken before an erasure still holds the erased person's data key, wrapped under
//! the master key of that time. `amble node erase` rotates the master key afterwards, which
//! retires that version from the key file (`docs/ARCHITECTURE.md`, "Erase rotates the master
//! key"). Restore therefore accepts a backup only when the key file's **current** master key
//! is the version that wrapped every data key in the backup. A backup older than an erasure —
//! older than any rotation — is refused before anything is written, rather than restored into
//! an archive that brings the person back (with a key file still holding that version) or
//! opens no one at all (without it). Take a new backup after every `erase` and `rotate-key`.
//!
//! What this rule cannot see: an erase made with `--no-rotate`, whose crypto-shredding is
//! complete only at the next rotation, and an old copy of the key file kept against advice.
//!
//! Backups are taken offline: the embedded engine locks its directory, so the node's service is stopped
//! first (or a filesystem snapshot is used instead). Within one process, [`Node::backup`]
//! is a consistent snapshot as long as nothing else writes to the node meanwhile.

use crate::archive::default_key_file;
use crate::store::{self, Store};
use crate::{Actor, Node, NodeError};
use amble_audit::{Action, Frontier, Hash, NoteSigner, leaf_hash};
use amble_crypto::{Keyring, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The format name written at the start of every backup.
pub const BACKUP_FORMAT: &str = "amble-backup/v1";
const MAGIC: &[u8; 16] = b"amble-backup/v1\n";
const MAGIC_FAMILY: &[u8] = b"amble-backup/";
const SIGNATURE_DOMAIN: &[u8] = b"amble/backup/v1\n";
const LEAF_BYTES: usize = 64 * 1024;
const TRAILER_BYTES: u64 = 32 + 64;
const MAX_HEADER_BYTES: u32 = 16 << 20;
const TAG_END: u8 = 0;
const TAG_TREE: u8 = 1;
const TAG_ENTRY: u8 = 2;
const IMPORT_BATCH: usize = 1024;
const PROGRESS_EVERY: u64 = 4096;
const POLICY_FILE: &str = "policy.toml";
const AUDIT_CHECK_DIR: &str = ".restore-audit-check";

/// What went wrong backing up or restoring; each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A backup was asked for at a path that already exists; nothing is overwritten. Holds the
    /// path.
    #[error("{0} already exists; choose a new file name for the backup")]
    OutExists(PathBuf),
    /// The file to restore does not start with `amble-backup/`. Holds its path.
    #[error("{0} is not an amble backup (it does not start with {BACKUP_FORMAT:?})")]
    NotABackup(PathBuf),
    /// The file is an amble backup, but of a format (or a database format) this version does not
    /// restore.
    #[error(
        "{path} is an amble backup of format {found:?}; this version of amble restores {BACKUP_FORMAT:?} only"
    )]
    UnsupportedFormat {
        /// The backup file.
        path: PathBuf,
        /// The format it declares.
        found: String,
    },
    /// The backup is truncated, its content does not match its content hash or signature, its
    /// body disagrees with its header, or it changed while being restored. Nothing is left
    /// restored.
    #[error(
        "backup {path} is truncated or corrupted ({reason}); nothing was restored from it — use another copy"
    )]
    Corrupt {
        /// The backup file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The backup verifies under the public key it names, but that is not the key file's signing
    /// key: the key file belongs to another node.
    #[error(
        "backup {path} was made by node {backup_origin}, but key file {key_file} belongs to node {key_origin}; pass the key file of the node that made the backup"
    )]
    WrongKeyFile {
        /// The backup file.
        path: PathBuf,
        /// The key file given for the restore.
        key_file: PathBuf,
        /// Origin (`amble.node/…`) of the node that made the backup.
        backup_origin: String,
        /// Origin of the node the key file belongs to.
        key_origin: String,
    },
    /// The key file's current master key is newer than the one the backup's data keys are
    /// wrapped under: the key was rotated (as every erase does) after the backup was taken, so
    /// restoring it could bring back erased people.
    #[error(
        "the node master key was rotated after this backup was taken (backup: v{backup}, key file: v{current}); every erase rotates the key, so restoring it could bring back people erased since. Restore a backup taken after the last rotation"
    )]
    PredatesRotation {
        /// Master key version the backup's data keys are wrapped under.
        backup: u32,
        /// Current master key version in the key file.
        current: u32,
    },
    /// The key file's current master key is older than the backup's: it is an old copy of the
    /// key file, not the node's current one.
    #[error(
        "key file {key_file} holds master key v{current}, older than the backup's v{backup}; pass the node's current key file"
    )]
    KeyFileOlder {
        /// The key file given for the restore.
        key_file: PathBuf,
        /// Master key version the backup's data keys are wrapped under.
        backup: u32,
        /// Current master key version in the key file.
        current: u32,
    },
    /// A backup was asked for while data keys are wrapped under more than one master key version
    /// (a rotation did not finish), so no single version could be recorded. Holds the versions
    /// found.
    #[error(
        "the node's data keys are wrapped under master key versions {0:?}; finish the rotation with `amble node rotate-key`, then back up"
    )]
    MixedKeyVersions(Vec<u32>),
    /// The restore's data directory holds something other than the key file to use. Holds the
    /// directory.
    #[error("{0} is not empty; restore only into a new or empty data directory")]
    TargetNotEmpty(PathBuf),
    /// A tree's entry count changed between reading the header and writing its entries: something
    /// wrote to the node during the backup. Holds which tree and the two counts.
    #[error("the node changed while it was being backed up ({0}); stop the service and try again")]
    ChangedDuringBackup(String),
    /// The restored audit log does not verify, or its recomputed size and root differ from those
    /// in the backup's header; the restore was undone. Holds the details.
    #[error("the restored audit log does not verify: {0}; the restore was undone")]
    AuditMismatch(String),
    /// Reading the backup or policy file, or writing the backup or the restored data directory,
    /// failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A node operation failed: the key file did not load, the backup's policy is invalid, the
    /// restored database did not open, or an audit append failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One tree of the database and how many entries it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeCount {
    /// The tree's name in the database.
    pub name: String,
    /// Number of key-value entries it holds.
    pub entries: u64,
}

/// The backup header (JSON), covered by the content root and the signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    store_format: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    origin: String,
    signing_public_key: String,
    kek_version: u32,
    audit_size: u64,
    audit_root: String,
    policy_toml: String,
    trees: Vec<TreeCount>,
}

/// How far a backup or restore is: entries written so far out of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Entries written so far.
    pub done: u64,
    /// Entries in all trees.
    pub total: u64,
}

/// What a backup wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The backup file written.
    pub file: PathBuf,
    /// Always [`BACKUP_FORMAT`].
    pub format: &'static str,
    /// When the backup was taken, by the node's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The node's origin (`amble.node/…`), which also names its audit log.
    pub origin: String,
    /// The master-key version every data key in the backup is wrapped under.
    pub kek_version: u32,
    /// Every database tree in the backup, in file order, with its entry count.
    pub trees: Vec<TreeCount>,
    /// Entries over all trees.
    pub entries: u64,
    /// Size of the backup file in bytes.
    pub bytes: u64,
    /// Hex RFC 9162 root over the file's content (what the signature covers).
    pub content_root: String,
    /// Entries in the node's audit log, including the entry that logs this backup.
    pub audit_size: u64,
    /// Hex root of the audit log at `audit_size`.
    pub audit_root: String,
}

/// What a restore established.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The data directory restored into.
    pub data_dir: PathBuf,
    /// The key file the restored node opens with.
    pub key_file: PathBuf,
    /// When the backup was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub backup_created_at: OffsetDateTime,
    /// Origin of the node that made the backup (and the key file's node).
    pub origin: String,
    /// Master key version every restored data key is wrapped under (the key file's current one).
    pub kek_version: u32,
    /// Every database tree restored, with its entry count.
    pub trees: Vec<TreeCount>,
    /// Entries restored over all trees.
    pub entries: u64,
    /// Subjects in the restored archive.
    pub subjects: usize,
    /// The audit log as backed up: its size and root, recomputed from its entries.
    pub audit_size: u64,
    /// Hex root of the audit log as backed up, recomputed from its entries.
    pub audit_root: String,
    /// Audit entries whose bodies were present and re-hashed (pruned ones are covered by
    /// their stored subtree hashes).
    pub audit_entries_checked: u64,
}

/// The content root: RFC 9162 over fixed-size leaves, so it streams in constant memory.
struct ContentHasher {
    frontier: Frontier,
    pending: Vec<u8>,
}

impl ContentHasher {
    fn new() -> Self {
        ContentHasher {
            frontier: Frontier::new(),
            pending: Vec::with_capacity(LEAF_BYTES),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (LEAF_BYTES - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == LEAF_BYTES {
                self.frontier.push(leaf_hash(&self.pending), |_, _, _| {});
                self.pending.clear();
            }
        }
    }

    fn finish(mut self) -> Hash {
        if !self.pending.is_empty() {
            self.frontier.push(leaf_hash(&self.pending), |_, _, _| {});
        }
        self.frontier.root()
    }
}

fn signed_message(root: &Hash) -> Vec<u8> {
    let mut m = SIGNATURE_DOMAIN.to_vec();
    m.extend_from_slice(root);
    m
}

fn origin_of(key: &VerifyingKey) -> String {
    format!(
        "amble.node/{}",
        &hex::encode(amble_crypto::sha256(key.as_bytes()))[..16]
    )
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: ContentHasher,
    written: u64,
    path: PathBuf,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        self.inner
            .write_all(bytes)
            .map_err(|source| NodeError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_len32(&mut self, bytes: &[u8]) -> Result<(), NodeError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| NodeError::Corrupt(format!("a stored item of {} bytes", bytes.len())))?;
        self.put(&len.to_be_bytes())?;
        self.put(bytes)
    }
}

impl Node {
    /// Writes a backup of the whole node to `out` (mode 0600; refuses to overwrite). Logged
    /// first, like every operation: the backup's own audit log ends with that entry.
    pub fn backup(&self, actor: &Actor, out: &Path) -> Result<BackupReport> {
        self.backup_with_progress(actor, out, &|_| {})
    }

    /// [`Node::backup`], calling `progress` as entries are written.
    pub fn backup_with_progress(
        &self,
        actor: &Actor,
        out: &Path,
        progress: &dyn Fn(Progress),
    ) -> Result<BackupReport> {
        if out.exists() {
            return Err(BackupError::OutExists(out.to_owned()));
        }
        let store = self.archive.store();
        let kek_version = self.archive.keyring().current_version();
        let versions = store.wrapped_key_versions()?;
        if versions.iter().any(|v| *v != kek_version) {
            return Err(BackupError::MixedKeyVersions(
                versions.into_iter().collect(),
            ));
        }
        let policy = self.policy();
        let policy_path = PathBuf::from(policy.source());
        let policy_toml = std::fs::read_to_string(&policy_path).map_err(io_err(&policy_path))?;

        self.audit
            .append_durable(
                actor
                    .draft(Action::Other("backup".into()))
                    .count("subjects", self.subject_count() as u64),
            )
            .map_err(NodeError::from)?;
        let (audit_size, audit_root) = self.audit.head().map_err(NodeError::from)?;
        let mut trees = Vec::new();
        for name in store.tree_names() {
            let entries = store.tree_len(&name)?;
            let name = String::from_utf8(name)
                .map_err(|_| NodeError::Corrupt("a tree name is not UTF-8".into()))?;
            trees.push(TreeCount { name, entries });
        }
        let total = trees.iter().map(|t| t.entries).sum();
        let header = Header {
            format: BACKUP_FORMAT.into(),
            store_format: String::from_utf8_lossy(store::FORMAT).into_owned(),
            created_at: self.now(),
            origin: self.origin().to_owned(),
            signing_public_key: self.signing_key().verifying_key().to_base64(),
            kek_version,
            audit_size,
            audit_root: hex::encode(audit_root),
            policy_toml,
            trees,
        };

        let file_name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".into());
        let partial = out.with_file_name(format!(".{file_name}.partial"));
        let written = self.write_backup(&partial, &header, total, progress);
        let (root, bytes) = match written {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        if let Err(source) = std::fs::rename(&partial, out) {
            let _ = std::fs::remove_file(&partial);
            return Err(BackupError::Io {
                path: out.to_owned(),
                source,
            });
        }
        progress(Progress { done: total, total });
        Ok(BackupReport {
            file: out.to_owned(),
            format: BACKUP_FORMAT,
            created_at: header.created_at,
            origin: header.origin,
            kek_version,
            trees: header.trees,
            entries: total,
            bytes,
            content_root: hex::encode(root),
            audit_size,
            audit_root: header.audit_root,
        })
    }

    /// Writes magic, header, body and trailer to `path`; returns the content root and size.
    fn write_backup(
        &self,
        path: &Path,
        header: &Header,
        total: u64,
        progress: &dyn Fn(Progress),
    ) -> Result<(Hash, u64)> {
        let file = create_private(path)?;
        let mut w = HashingWriter {
            inner: BufWriter::new(file),
            hasher: ContentHasher::new(),
            written: 0,
            path: path.to_owned(),
        };
        let header_json = serde_json::to_vec(header)
            .map_err(|e| NodeError::Corrupt(format!("backup header: {e}")))?;
        w.put(MAGIC)?;
        w.put_len32(&header_json)?;
        let store = self.archive.store();
        let mut done = 0u64;
        for tree in &header.trees {
            let name = tree.name.as_bytes();
            let name_len = u16::try_from(name.len())
                .map_err(|_| NodeError::Corrupt(format!("tree name {:?}", tree.name)))?;
            w.put(&[TAG_TREE])?;
            w.put(&name_len.to_be_bytes())?;
            w.put(name)?;
            w.put(&tree.entries.to_be_bytes())?;
            let mut n = 0u64;
            store.for_each_entry(name, &mut |k, v| {
                w.put(&[TAG_ENTRY])?;
                w.put_len32(k)?;
                w.put_len32(v)?;
                n += 1;
                done += 1;
                if done % PROGRESS_EVERY == 0 {
                    progress(Progress { done, total });
                }
                Ok(())
            })?;
            if n != tree.entries {
                return Err(BackupError::ChangedDuringBackup(format!(
                    "tree {} had {} entries, then {n}",
                    tree.name, tree.entries
                )));
            }
        }
        w.put(&[TAG_END])?;
        let HashingWriter {
            inner,
            hasher,
            written,
            ..
        } = w;
        let root = hasher.finish();
        let signature = self.signing_key().sign(&signed_message(&root));
        let mut inner = inner;
        inner.write_all(&root).map_err(io_err(path))?;
        inner.write_all(&signature).map_err(io_err(path))?;
        let file = inner
            .into_inner()
            .map_err(|e| io_err(path)(e.into_error()))?;
        file.sync_all().map_err(io_err(path))?;
        Ok((root, written + TRAILER_BYTES))
    }
}

fn create_private(path: &Path) -> Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(io_err(path))
}

/// Reads a backup's content, hashing every byte, never past the trailer.
struct BackupReader {
    inner: BufReader<File>,
    hasher: ContentHasher,
    left: u64,
    path: PathBuf,
}

impl BackupReader {
    fn corrupt(&self, reason: impl Into<String>) -> BackupError {
        BackupError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        if n as u64 > self.left {
            return Err(self.corrupt(format!(
                "an item of {n} bytes runs past the end of the content"
            )));
        }
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(io_err(&self.path))?;
        self.hasher.update(&buf);
        self.left -= n as u64;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let v = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn len32(&mut self) -> Result<usize> {
        let n = u32::from_be_bytes(self.array()?);
        usize::try_from(n).map_err(|_| self.corrupt("a length does not fit in memory"))
    }

    /// Hashes the rest of the content without interpreting it.
    fn drain(mut self) -> Result<Hash> {
        let mut buf = vec![0u8; LEAF_BYTES];
        while self.left > 0 {
            let n = usize::try_from(self.left.min(LEAF_BYTES as u64)).unwrap_or(LEAF_BYTES);
            self.inner
                .read_exact(&mut buf[..n])
                .map_err(io_err(&self.path))?;
            self.hasher.update(&buf[..n]);
            self.left -= n as u64;
        }
        Ok(self.hasher.finish())
    }
}

/// An opened backup: its header, its trailer, and a reader at the start of the body.
struct Opened {
    header: Header,
    root: Hash,
    signature: [u8; 64],
    reader: BackupReader,
}

fn open_backup(path: &Path) -> Result<Opened> {
    let corrupt = |reason: String| BackupError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut magic = [0u8; 16];
    let got = read_up_to(&mut file, &mut magic).map_err(io_err(path))?;
    if !magic[..got].starts_with(MAGIC_FAMILY) && !MAGIC_FAMILY.starts_with(&magic[..got]) {
        return Err(BackupError::NotABackup(path.to_owned()));
    }
    if got == magic.len() && magic != *MAGIC {
        let found = String::from_utf8_lossy(&magic);
        return Err(BackupError::UnsupportedFormat {
            path: path.to_owned(),
            found: found.trim_end().to_owned(),
        });
    }
    let min = MAGIC.len() as u64 + 4 + 1 + TRAILER_BYTES;
    if len < min {
        return Err(corrupt(format!(
            "it is {len} bytes long, shorter than the smallest backup"
        )));
    }
    let content_len = len - TRAILER_BYTES;
    file.seek(SeekFrom::Start(content_len))
        .map_err(io_err(path))?;
    let mut trailer = [0u8; 96];
    file.read_exact(&mut trailer).map_err(io_err(path))?;
    let mut root = [0u8; 32];
    root.copy_from_slice(&trailer[..32]);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&trailer[32..]);
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;

    let mut reader = BackupReader {
        inner: BufReader::new(file),
        hasher: ContentHasher::new(),
        left: content_len,
        path: path.to_owned(),
    };
    reader.take(MAGIC.len())?;
    let hlen = reader.len32()?;
    if hlen as u64 > u64::from(MAX_HEADER_BYTES) {
        return Err(corrupt(format!("a header of {hlen} bytes")));
    }
    let header: Header = serde_json::from_slice(&reader.take(hlen)?)
        .map_err(|e| corrupt(format!("the header does not parse: {e}")))?;
    if header.format != BACKUP_FORMAT {
        return Err(BackupError::UnsupportedFormat {
            path: path.to_owned(),
            found: header.format,
        });
    }
    Ok(Opened {
        header,
        root,
        signature,
        reader,
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Restores the backup `from` into the new data directory `data_dir`, to be opened with
/// `key_file` (default `DATA_DIR/node.key`). See the module documentation for what is
/// checked, and in which order; on any failure nothing is left in `data_dir`.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    key_file: Option<&Path>,
    actor: &Actor,
) -> Result<RestoreReport> {
    restore_with_progress(from, data_dir, key_file, actor, &|_| {})
}

/// [`restore`], calling `progress` as entries are written.
pub fn restore_with_progress(
    from: &Path,
    data_dir: &Path,
    key_file: Option<&Path>,
    actor: &Actor,
    progress: &dyn Fn(Progress),
) -> Result<RestoreReport> {
    let key_path = key_file.map_or_else(|| default_key_file(data_dir), Path::to_owned);
    let existed = check_target(data_dir, &key_path)?;

    // Everything about the file and the key is checked before the first write.
    let opened = open_backup(from)?;
    let header = opened.header.clone();
    let (expected_root, signature) = (opened.root, opened.signature);
    if opened.reader.drain()? != expected_root {
        return Err(BackupError::Corrupt {
            path: from.to_owned(),
            reason: "its content does not match its content hash".into(),
        });
    }
    let keyring = Keyring::load(&key_path).map_err(NodeError::from)?;
    check_signature(
        from,
        &key_path,
        &keyring,
        &header,
        &expected_root,
        &signature,
    )?;
    let current = keyring.current_version();
    drop(keyring);
    if current > header.kek_version {
        return Err(BackupError::PredatesRotation {
            backup: header.kek_version,
            current,
        });
    }
    if current < header.kek_version {
        return Err(BackupError::KeyFileOlder {
            key_file: key_path,
            backup: header.kek_version,
            current,
        });
    }
    if header.store_format.as_bytes() != store::FORMAT {
        return Err(BackupError::UnsupportedFormat {
            path: from.to_owned(),
            found: header.store_format,
        });
    }
    amble_policy::Policy::from_toml_str(&header.policy_toml, "the backup's policy.toml")
        .map_err(NodeError::from)?;

    let done = write_and_verify(from, data_dir, &key_path, &header, actor, progress);
    if done.is_err() {
        undo(data_dir, existed);
    }
    done
}

/// The target must be new, or empty but for the key file the restore will use.
fn check_target(data_dir: &Path, key_path: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(BackupError::Io {
                path: data_dir.to_owned(),
                source,
            });
        }
    };
    let key = std::fs::canonicalize(key_path).ok();
    for e in entries {
        let e = e.map_err(io_err(data_dir))?;
        let is_key = key.is_some() && std::fs::canonicalize(e.path()).ok() == key;
        if !is_key {
            return Err(BackupError::TargetNotEmpty(data_dir.to_owned()));
        }
    }
    Ok(true)
}

fn check_signature(
    from: &Path,
    key_path: &Path,
    keyring: &Keyring,
    header: &Header,
    root: &Hash,
    signature: &[u8; 64],
) -> Result<()> {
    let msg = signed_message(root);
    let ours = keyring
        .signing_key()
        .map_err(NodeError::from)?
        .verifying_key();
    if ours.verify(&msg, signature).is_ok() {
        return Ok(());
    }
    let theirs = VerifyingKey::from_base64(&header.signing_public_key).ok();
    match theirs {
        Some(k) if k.verify(&msg, signature).is_ok() => Err(BackupError::WrongKeyFile {
            path: from.to_owned(),
            key_file: key_path.to_owned(),
            backup_origin: header.origin.clone(),
            key_origin: origin_of(&ours),
        }),
        _ => Err(BackupError::Corrupt {
            path: from.to_owned(),
            reason: "its signature does not verify under the node key it names".into(),
        }),
    }
}

/// Removes what a failed restore wrote (the key file, which it never writes, stays).
fn undo(data_dir: &Path, existed: bool) {
    if existed {
        let _ = std::fs::remove_dir_all(store::db_dir(data_dir));
        let _ = std::fs::remove_file(data_dir.join(POLICY_FILE));
        let _ = std::fs::remove_dir_all(data_dir.join(AUDIT_CHECK_DIR));
    } else {
        let _ = std::fs::remove_dir_all(data_dir);
    }
}

fn write_and_verify(
    from: &Path,
    data_dir: &Path,
    key_path: &Path,
    header: &Header,
    actor: &Actor,
    progress: &dyn Fn(Progress),
) -> Result<RestoreReport> {
    amble_crypto::create_private_dir(data_dir).map_err(io_err(data_dir))?;
    let policy_path = data_dir.join(POLICY_FILE);
    std::fs::write(&policy_path, &header.policy_toml).map_err(io_err(&policy_path))?;
    {
        let store = store::open(&store::db_dir(data_dir))?;
        import_body(from, store.as_ref(), header, progress)?;
        store.flush()?;
    }

    let node = open_when_released(data_dir, key_path)?;
    let versions = node.archive.store().wrapped_key_versions()?;
    if versions.iter().any(|v| *v != header.kek_version) {
        return Err(BackupError::Corrupt {
            path: from.to_owned(),
            reason: format!(
                "it names master key v{} but holds data keys under {versions:?}",
                header.kek_version
            ),
        });
    }
    let checked = verify_audit(&node, data_dir, header)?;
    node.audit
        .append_durable(
            actor
                .draft(Action::Other("restore".into()))
                .reason(format!(
                    "restored from a backup taken at {} (audit size {})",
                    header
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    header.audit_size
                ))
                .count("entries", header.trees.iter().map(|t| t.entries).sum()),
        )
        .map_err(NodeError::from)?;
    Ok(RestoreReport {
        data_dir: data_dir.to_owned(),
        key_file: key_path.to_owned(),
        backup_created_at: header.created_at,
        origin: header.origin.clone(),
        kek_version: header.kek_version,
        trees: header.trees.clone(),
        entries: header.trees.iter().map(|t| t.entries).sum(),
        subjects: node.subject_count(),
        audit_size: header.audit_size,
        audit_root: header.audit_root.clone(),
        audit_entries_checked: checked,
    })
}

/// Second pass over the file: parse the body, write it, and check the content root again
/// (the file must not have changed since it was verified).
fn import_body(
    from: &Path,
    store: &dyn Store,
    header: &Header,
    progress: &dyn Fn(Progress),
) -> Result<()> {
    let opened = open_backup(from)?;
    let expected = opened.root;
    let mut r = opened.reader;
    let total: u64 = header.trees.iter().map(|t| t.entries).sum();
    let mut done = 0u64;
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(IMPORT_BATCH);
    for tree in &header.trees {
        if r.u8()? != TAG_TREE {
            return Err(r.corrupt(format!("tree {} is missing", tree.name)));
        }
        let name_len = usize::from(u16::from_be_bytes(r.array()?));
        let name = r.take(name_len)?;
        let entries = u64::from_be_bytes(r.array()?);
        if name != tree.name.as_bytes() || entries != tree.entries {
            return Err(r.corrupt(format!(
                "the body's tree {:?} with {entries} entries is not the header's {} with {}",
                String::from_utf8_lossy(&name),
                tree.name,
                tree.entries
            )));
        }
        for _ in 0..entries {
            if r.u8()? != TAG_ENTRY {
                return Err(r.corrupt(format!("tree {} ends early", tree.name)));
            }
            let klen = r.len32()?;
            let k = r.take(klen)?;
            let vlen = r.len32()?;
            let v = r.take(vlen)?;
            batch.push((k, v));
            if batch.len() == IMPORT_BATCH {
                store.import_entries(&name, &batch)?;
                batch.clear();
            }
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(Progress { done, total });
            }
        }
        if !batch.is_empty() {
            store.import_entries(&name, &batch)?;
            batch.clear();
        }
    }
    if r.u8()? != TAG_END || r.left != 0 {
        return Err(r.corrupt("the body does not end where its header says"));
    }
    if r.hasher.finish() != expected {
        return Err(BackupError::Corrupt {
            path: from.to_owned(),
            reason: "it changed while it was being restored".into(),
        });
    }
    progress(Progress { done, total });
    Ok(())
}

/// Opens the restored node (the store waits for the import's handle to let go of the lock).
fn open_when_released(data_dir: &Path, key_path: &Path) -> Result<Node, NodeError> {
    Node::open(data_dir, Some(key_path), None)
}

/// Recomputes the restored audit log's root from its entries with the offline verifier
/// (export, then verify against the node's own key) and compares it with the backup's.
fn verify_audit(node: &Node, data_dir: &Path, header: &Header) -> Result<u64> {
    let dir = data_dir.join(AUDIT_CHECK_DIR);
    let checked = (|| {
        let mismatch = |e: &dyn std::fmt::Display| BackupError::AuditMismatch(e.to_string());
        amble_audit::export_dir(node.audit_log(), node.signing_key(), node.origin(), &dir)
            .map_err(|e| mismatch(&e))?;
        let verifier = NoteSigner::from_key(node.origin(), node.signing_key())
            .map_err(|e| mismatch(&e))?
            .verifier();
        let report = amble_audit::verify_dir(&dir, None, &[verifier]).map_err(|e| mismatch(&e))?;
        let root = hex::encode(report.root);
        if report.size != header.audit_size || root != header.audit_root {
            return Err(BackupError::AuditMismatch(format!(
                "recomputed size {} root {root}, the backup says size {} root {}",
                report.size, header.audit_size, header.audit_root
            )));
        }
        Ok(report.entries)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_root_does_not_depend_on_how_the_bytes_arrive() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut one = ContentHasher::new();
        one.update(&data);
        let mut many = ContentHasher::new();
        for c in data.chunks(777) {
            many.update(c);
        }
        let leaves: Vec<Hash> = data.chunks(LEAF_BYTES).map(leaf_hash).collect();
        let expected = amble_audit::reference_root(&leaves);
        assert_eq!(one.finish(), expected);
        assert_eq!(many.finish(), expected);
    }
}
