//! The per-request hot path's allocation budget (see `benches/common/hot_path.rs`). Its own
//! test binary, since the counting allocator applies to the whole binary.

#[path = "../benches/common/counting_alloc.rs"]
mod counting;
#[path = "../benches/common/hot_path.rs"]
mod hot;
#[path = "../benches/common/routes.rs"]
mod routes;

#[test]
fn the_hot_path_allocates_within_budget() {
    let metrics = outrigger::metrics::Metrics::new();
    let t = hot::table(&metrics);
    let per_request = hot::allocations_per_request(&t, 1000);
    eprintln!("hot path: {per_request:.2} allocations per request");
    // Three: the x-request-id value and the header map's one growth for the added headers
    // (its index and entry tables). The x-forwarded-for value is made once per connection and
    // shared. Route match, target choice, pick, in-flight and status counting allocate
    // nothing. The fraction above 3 is one-time thread-local set-up (the random number
    // generators) spread over the rounds.
    assert!(
        per_request <= BUDGET,
        "{per_request} allocations per request"
    );
}

const BUDGET: f64 = 3.05;
