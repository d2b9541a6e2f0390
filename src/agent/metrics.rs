//! The agent's metrics (`/metrics`, prefix `tcred_agent_`): answers by status code, cache hits
//! and size, upstream latency. No label carries a token, a namespace or a name.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// The status code answered, or `other` for a code outside the known set.
    pub code: &'static str,
}

pub struct AgentMetrics {
    registry: Registry,
    pub requests: Family<CodeLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_entries: Gauge,
    pub upstream_seconds: Histogram,
}

/// The label of a status code: the codes the agent and the endpoint answer, else `other`, so an
/// upstream cannot multiply the series.
pub fn code_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tcred_agent");
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "requests",
            "Credential requests answered, by status code",
            requests.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Requests answered from the cache",
            cache_hits.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Answers held in the cache",
            cache_entries.clone(),
        );
        let upstream_seconds = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        registry.register_with_unit(
            "upstream_duration",
            "Time of a request to the controller's endpoint",
            Unit::Seconds,
            upstream_seconds.clone(),
        );
        Self {
            registry,
            requests,
            cache_hits,
            cache_entries,
            upstream_seconds,
        }
    }
}

impl AgentMetrics {
    pub fn answered(&self, status: u16) {
        self.requests
            .get_or_create(&CodeLabels {
                code: code_label(status),
            })
            .inc();
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_share_one_series() {
        let m = AgentMetrics::default();
        m.answered(200);
        m.answered(299);
        m.answered(418);
        let out = m.render().unwrap();
        assert!(
            out.contains(r#"tcred_agent_requests_total{code="200"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"tcred_agent_requests_total{code="other"} 2"#),
            "{out}"
        );
    }
}
