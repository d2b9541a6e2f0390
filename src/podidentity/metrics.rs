//! Metrics of the credentials endpoint. Labels are a status code or a review result only: never a
//! token, ServiceAccount, namespace or credential, so no tenant can grow the series.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The HTTP status code answered.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `authenticated`, `unauthenticated`, `refused_locally`, `throttled` or `error`.
    pub result: &'static str,
}

#[derive(Debug)]
pub struct EndpointMetrics {
    pub requests: Family<CodeLabels, Counter>,
    pub reviews: Family<ResultLabels, Counter>,
    pub duration: Histogram,
    pub cached_tokens: Gauge,
}

impl EndpointMetrics {
    /// Creates the metrics and registers them as `tcred_pod_identity_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            reviews: Family::default(),
            duration: Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            cached_tokens: Gauge::default(),
        };
        registry.register(
            "pod_identity_requests",
            "Requests to the credentials endpoint, by status code",
            m.requests.clone(),
        );
        registry.register(
            "pod_identity_token_reviews",
            "Tokens checked for the credentials endpoint, by result",
            m.reviews.clone(),
        );
        registry.register_with_unit(
            "pod_identity_request_duration",
            "Time to answer one request to the credentials endpoint",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "pod_identity_cached_tokens",
            "TokenReview results held in the credentials endpoint's cache",
            m.cached_tokens.clone(),
        );
        m
    }

    pub fn review(&self, result: &'static str) {
        self.reviews.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn request(&self, code: u16, seconds: f64) {
        self.requests.get_or_create(&CodeLabels { code }).inc();
        self.duration.observe(seconds);
    }
}
