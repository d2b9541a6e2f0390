//! Huawei Cloud: request signing, the OIDC, portal and STS clients, and error classification.

pub mod signer;
