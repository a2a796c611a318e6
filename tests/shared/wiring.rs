//! posthook's request path without a server: the `Proxy` with its hook index and a dispatcher,
//! built from a config, for the tests that drive the proxy directly (`tests/filters.rs`,
//! `tests/properties.rs`) and for the `request_decision` fuzz target. One place to follow when
//! these constructors change.
//!
//! Each of them includes this file with `#[path = "…"] mod wiring;` (the fuzz crate cannot use a
//! test crate, and the library does not export test code). It needs the posthook library only.

use std::sync::Arc;

use posthook::config::Config;
use posthook::dispatch::Dispatcher;
use posthook::live::Live;
use posthook::mattermost::MattermostClient;
use posthook::net::SystemResolver;
use posthook::proxy::Proxy;
use posthook::reply::LogAnswers;
use posthook::rules::HookIndex;
use posthook::stats::Stats;

/// The proxy for `config`, counting into `stats`, with its hook index and the dispatcher its
/// jobs go to. Dropping the dispatcher closes the queue: every job submitted after that is
/// counted in `jobs_dropped`.
pub fn wire(config: &Config, stats: Arc<Stats>) -> (Proxy, Arc<HookIndex>, Dispatcher) {
    let index = Arc::new(HookIndex::new(&config.hooks));
    let mm = MattermostClient::from_config(config, stats.clone()).unwrap_or_else(|e| panic!("{e}"));
    let live = Live::build(config, Arc::new(SystemResolver))
        .unwrap_or_else(|e| panic!("{e}"))
        .shared();
    let (dispatcher, handle) = Dispatcher::new(
        config,
        live.clone(),
        mm,
        stats.clone(),
        Arc::new(LogAnswers),
    );
    let proxy = Proxy::new(config, live, handle, stats, None);
    (proxy, index, dispatcher)
}
