//! The on-disk / on-wire form of a model: a self-describing header and raw little-endian floats.
//!
//! ```text
//! "AMBLEMDL" (8 bytes) ‖ header length (u32 LE) ‖ header (JSON) ‖ weights (f32 LE, feature-major:
//! dim runs of `classes` floats) ‖ bias (classes × f32 LE)
//! ```
//! The header names the model kind, the format version, the shapes and the labels, so a reader
//! can refuse a model it does not understand before touching the floats.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::SoftmaxRegression;

const MAGIC: &[u8; 8] = b"AMBLEMDL";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
const MAX_HEADER: usize = 16 << 20;

/// The self-describing header of a serialised model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// `"intent-softmax"` or `"needs-softmax"`.
    pub kind: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Number of classes.
    pub classes: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Class labels, in class-index order.
    pub labels: Vec<String>,
    /// Kind-specific settings (featuriser configuration, …).
    pub config: serde_json::Value,
}

/// Serialises a header and a softmax model.
pub fn write_model(header: &ModelHeader, model: &SoftmaxRegression) -> Result<Vec<u8>> {
    let h = serde_json::to_vec(header).map_err(|e| LearnError::ModelFormat(e.to_string()))?;
    let w = model.w()?;
    let b = model.b()?;
    let mut out = Vec::with_capacity(12 + h.len() + 4 * (w.len() + b.len()));
    out.extend_from_slice(MAGIC);
    let hl =
        u32::try_from(h.len()).map_err(|_| LearnError::ModelFormat("header too large".into()))?;
    out.extend_from_slice(&hl.to_le_bytes());
    out.extend_from_slice(&h);
    for v in w.iter().chain(b) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Reads what [`write_model`] wrote, checking `kind` and every length.
pub fn read_model(bytes: &[u8], kind: &str) -> Result<(ModelHeader, SoftmaxRegression)> {
    let bad = |m: &str| LearnError::ModelFormat(m.to_string());
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("missing AMBLEMDL magic"));
    }
    let mut hl = [0u8; 4];
    hl.copy_from_slice(&bytes[8..12]);
    let hl = u32::from_le_bytes(hl) as usize;
    if hl > MAX_HEADER || bytes.len() < 12 + hl {
        return Err(bad("header length exceeds the data"));
    }
    let header: ModelHeader = serde_json::from_slice(&bytes[12..12 + hl])
        .map_err(|e| LearnError::ModelFormat(format!("header: {e}")))?;
    if header.kind != kind {
        return Err(LearnError::ModelFormat(format!(
            "expected a {kind} model, found {}",
            header.kind
        )));
    }
    if header.version != FORMAT_VERSION {
        return Err(LearnError::ModelFormat(format!(
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
            header.version
        )));
    }
    if header.labels.len() != header.classes {
        return Err(bad("label count differs from class count"));
    }
    let n = header
        .classes
        .checked_mul(header.dim)
        .and_then(|x| x.checked_add(header.classes))
        .ok_or_else(|| bad("shape overflows"))?;
    let body = &bytes[12 + hl..];
    if Some(body.len()) != n.checked_mul(4) {
        return Err(bad(
            "float payload length does not match the header's shapes",
        ));
    }
    let mut floats: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if floats.iter().any(|v| !v.is_finite()) {
        return Err(bad("non-finite weight"));
    }
    let bias = floats.split_off(header.classes * header.dim);
    let model = SoftmaxRegression::from_parts(header.classes, header.dim, floats, bias)?;
    Ok((header, model))
}
