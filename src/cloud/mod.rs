//! Huawei Cloud: request signing, the OIDC, portal, STS and SWR clients, endpoint rules and error
//! classification. Nothing here knows about Kubernetes.

pub mod audit;
pub mod credential;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod oidc;
pub mod portal;
pub mod signer;
pub mod sts;
pub mod swr;

pub use credential::IssuedCredential;
pub use error::{CloudError, ErrorClass};
pub use http::HttpClient;
