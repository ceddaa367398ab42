//! amble-proto: the wire contract between amble's participants.
//!
//! `amble/v1/*.proto` define the node's services — `Archive` (apps and agents), `Subject`
//! (data subjects, through the organisation's app or portal), `Assist` (intent, routing and
//! needs for agents), `Audit` (auditors and the coordinator as witness) and `Admin`
//! (operators) — and the coordinator's `Federation` service, which nodes call to join, take
//! tasks, fetch models, stream updates, decline a round and have their checkpoints
//! cosigned. The Rust code is generated at build time by protox + tonic-prost-build, so no
//! system `protoc` is needed.
//!
//! Rich documents (a projection, an export, a consent history, audit entries) travel as the
//! same canonical JSON the offline tools read, so an export fetched over gRPC verifies exactly
//! like one written by `amble node export`; a projection and an export, which can outgrow any
//! message, stream in chunks ([`chunks`]). Who is calling is never a request field: the
//! server takes the caller's id and role from its client certificate.
//!
//! On the map in `docs/ARCHITECTURE.md` this crate sits beside `crypto`, below `node`.
//!
//! ```
//! use amble_proto::chunks::{Chunk, split};
//! use amble_proto::v1::ExportChunk;
//!
//! // A document bigger than one message travels as chunks that each fit the limit, and
//! // `chunks::join` puts the stream back together whole.
//! let doc = "人".repeat(1000); // 3,000 bytes of UTF-8
//! let parts: Vec<ExportChunk> = split(doc.clone(), 512);
//! assert!(parts.len() > 1);
//! let mut back = Vec::new();
//! for part in parts {
//!     let bytes = part.into_bytes();
//!     assert!(bytes.len() <= 512);
//!     back.extend(bytes);
//! }
//! assert_eq!(String::from_utf8(back).unwrap(), doc);
//! ```

#[cfg(test)]
mod tests {
    #[test]
    fn method_paths_lists_each_declared_rpc_of_a_service() {
        let subject = super::method_paths("Subject");
        assert!(subject.contains(&"/amble.v1.Subject/Export".to_owned()));
        assert!(subject.iter().all(|p| p.starts_with("/amble.v1.Subject/")));
        assert!(
            super::method_paths("Federation").contains(&"/amble.v1.Federation/Join".to_owned())
        );
        assert!(super::method_paths("Nothing").is_empty());
    }
}

/// Version 1 of the amble protocol.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("amble.v1");
}

/// The `.proto` sources of version 1, by service, as the build compiled them: for checks that
/// every declared method is served and has a role list ([`method_paths`]).
const SOURCES: [&str; 6] = [
    include_str!("../amble/v1/admin.proto"),
    include_str!("../amble/v1/archive.proto"),
    include_str!("../amble/v1/assist.proto"),
    include_str!("../amble/v1/audit.proto"),
    include_str!("../amble/v1/federation.proto"),
    include_str!("../amble/v1/subject.proto"),
];

/// The paths (`/amble.v1.SERVICE/METHOD`) of every `rpc` that `service` declares in the
/// version 1 sources; empty for a service no source declares.
pub fn method_paths(service: &str) -> Vec<String> {
    let opening = format!("service {service} {{");
    SOURCES
        .iter()
        .filter_map(|text| text.find(&opening).map(|at| &text[at..]))
        .flat_map(|body| {
            let body = &body[..body.find("\n}").unwrap_or(body.len())];
            body.lines()
                .filter_map(|l| l.trim().strip_prefix("rpc "))
                .filter_map(|l| l.split('(').next())
                .map(|name| format!("/amble.v1.{service}/{}", name.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Documents that may outgrow one message — a person's projection (`Archive.Read`) and
/// export (`Subject.Export`) — travel as a stream of chunks of UTF-8 JSON. The server splits
/// with [`chunks::split`]; a client joins with [`chunks::join`], which bounds what it holds.
pub mod chunks {
    use super::v1;
    use tonic::{Status, Streaming};

    /// What amble's own clients accept of one document: 1 GiB.
    pub const MAX_DOCUMENT_BYTES: usize = 1 << 30;

    /// A message that carries the next bytes of a chunked document.
    pub trait Chunk: Send + 'static {
        /// Wraps the next bytes of the document.
        fn wrap(bytes: Vec<u8>) -> Self;
        /// The bytes this chunk carries.
        fn into_bytes(self) -> Vec<u8>;
    }

    impl Chunk for v1::ReadChunk {
        fn wrap(bytes: Vec<u8>) -> Self {
            Self {
                projection_json: bytes,
            }
        }
        fn into_bytes(self) -> Vec<u8> {
            self.projection_json
        }
    }

    impl Chunk for v1::ExportChunk {
        fn wrap(bytes: Vec<u8>) -> Self {
            Self { export_json: bytes }
        }
        fn into_bytes(self) -> Vec<u8> {
            self.export_json
        }
    }

    /// Splits `doc` into chunks of at most `size` bytes (at least one chunk, even for an
    /// empty document, so a client always sees the document arrive). A chunk may end inside
    /// a UTF-8 character; only the joined bytes are text.
    pub fn split<C: Chunk>(doc: String, size: usize) -> Vec<C> {
        let bytes = doc.into_bytes();
        if bytes.is_empty() {
            return vec![C::wrap(Vec::new())];
        }
        bytes
            .chunks(size.max(1))
            .map(|c| C::wrap(c.to_vec()))
            .collect()
    }

    /// Reads the whole stream and returns the document. Refuses (RESOURCE_EXHAUSTED) a
    /// document longer than `max_bytes` before holding more than that, and (DATA_LOSS) one
    /// whose joined bytes are not UTF-8.
    pub async fn join<C: Chunk>(
        mut stream: Streaming<C>,
        max_bytes: usize,
    ) -> Result<String, Status> {
        let mut doc = Vec::new();
        while let Some(chunk) = stream.message().await? {
            let bytes = chunk.into_bytes();
            if doc.len().saturating_add(bytes.len()) > max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the document is longer than the {max_bytes} bytes this client accepts"
                )));
            }
            doc.extend_from_slice(&bytes);
        }
        String::from_utf8(doc)
            .map_err(|_| Status::data_loss("the joined chunks are not UTF-8 JSON"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn split_then_concatenate_gives_back_the_document_even_across_a_character() {
            let doc = "户口".repeat(1000);
            for size in [1, 2, 5, 64, 10_000] {
                let parts: Vec<v1::ExportChunk> = split(doc.clone(), size);
                assert!(parts.iter().all(|p| p.export_json.len() <= size));
                let joined: Vec<u8> = parts.into_iter().flat_map(Chunk::into_bytes).collect();
                assert_eq!(
                    String::from_utf8(joined).ok().as_deref(),
                    Some(doc.as_str())
                );
            }
            let empty: Vec<v1::ReadChunk> = split(String::new(), 8);
            assert_eq!(empty.len(), 1);
        }
    }
}
