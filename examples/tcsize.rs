use std::sync::Arc;
#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
fn live() -> usize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap()
}
use tcred::api::TemporaryCredential;
fn main() {
    let n = 10_000;
    let text = std::fs::read_to_string(std::env::var("TC").unwrap()).unwrap();
    let before = live();
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = text.replace("c00", &format!("c{i:05}"));
        let mut tc: TemporaryCredential = serde_json::from_str(&t).unwrap();
        if std::env::var("COMPACT").is_ok() {
            tc.metadata.managed_fields = None;
            if let Some(st) = tc.status.as_mut() {
                st.conditions.shrink_to_fit();
                st.issued_credentials.shrink_to_fit();
            }
        }
        v.push(Arc::new(tc));
    }
    println!("per TC (Arc) {} B", (live() - before) / n);
}
