//! Ids and tokens shaped as Mattermost shapes them (26 characters), and the size of the hook
//! set. The stand-in, the load generator and the configs must agree on them: a post matches a
//! hook, and a look-up counts as posthook's, only when both sides use the same values.

pub const TEAM_ID: &str = "kwoknj9nwpypzgzy78wkw516qe";
pub const CHANNEL_ID: &str = "hawos4dqtby53pd64o4a4cmeoo";
pub const USER_ID: &str = "rnina6ed6fdudqxrbpcbpbwcka";
pub const BOT_ID: &str = "bt7x3dqn3hbrw3jyitxs4r5nmu";
pub const USER_TOKEN: &str = "usrtok9fdt8zjbqfy5pnkb8bq7";
pub const BOT_TOKEN: &str = "bottok4dqtby53pd64o4a4cmee";
pub const VERSION_ID: &str = "10.11.0.10.11.0.6f9a1c0e2d8b4a7c9e3f5b1d0a2c4e6f.false";
/// Messages that start with this trigger exactly one of the generated hooks.
pub const MATCH_PREFIX: &str = "#word";
/// How many hooks posthook C (and the dead-sink instance) load.
pub const HOOKS: usize = 10_000;
/// One post in this many matches a hook.
pub const MATCH_EVERY: usize = 10;
