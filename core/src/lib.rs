//! `ksa-core`: keys, tokens and the signing-key rotation state machine.
//!
//! This crate is sans-IO: it reads no files, opens no sockets, reads no clock,
//! environment or randomness. Time is always an argument. Key generation and
//! signing come in through the [`crypto::KeyGenerator`] and
//! [`crypto::SigningKey`] traits; the aws-lc-rs implementation sits behind the
//! `aws-lc` feature (native builds), a pure-Rust verifier behind `rust-crypto`
//! (the wasm32 build). Everything else builds for `wasm32-unknown-unknown`.
//!
//! - [`key`]: public and private keys in the formats kube-apiserver reads, and
//!   the key id (`kid`) it derives.
//! - [`jwk`]: JWK and JWKS (RFC 7517).
//! - [`token`]: service-account token claims; mint, decode and verify.
//! - [`issuer`]: the service-account issuer, the issuer state and its status
//!   line (SPEC section 10).
//! - [`instances`]: which kube-apiserver instances a step is confirmed on.
//! - [`rotation`]: the five rotation steps as a pure step function.
//! - [`signing_issuer`]: which issuer a cluster signs with before a rotation.
//! - [`status`]: the status line, formatted and parsed byte for byte.

pub mod crypto;
pub mod discovery;
pub mod instances;
pub mod issuer;
pub mod jwk;
pub mod key;
pub mod keyset;
pub mod rotation;
pub mod signing_issuer;
pub mod status;
pub mod token;
mod version;

pub use version::{KeyId, KeyVersion};

/// Largest text any parser of this crate accepts (a token, a JWKS, a PEM file,
/// a status line). Real inputs are a few KiB; the cap keeps hostile input from
/// allocating without bound.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
