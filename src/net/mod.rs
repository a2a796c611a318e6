//! Outbound HTTP: the pooled client both webhook deliveries and Mattermost calls use
//! ([`client`]), and the SSRF guard that decides which addresses a webhook may reach
//! ([`guard`]).

pub mod client;
pub mod guard;

pub use client::{describe, read_capped, BodyError, HttpClient};
pub use guard::{
    AddressPolicy, BoxError, GuardedResolver, RefusedAddress, Resolver, SystemResolver,
};
