//! The SSRF guard: which addresses a webhook may be sent to, enforced where names are resolved.
//!
//! Mattermost refuses integration requests to loopback, private, link-local and unspecified
//! addresses unless the admin allowed them (`allowed_untrusted_internal_connections`).
//! posthook applies the same rule to the addresses a name resolves to, inside the resolver the
//! HTTP client connects through ([`GuardedResolver`]): nothing can be connected to between the
//! check and the connect, so a DNS answer that changes (rebinding) cannot slip past. IP-literal
//! hosts never reach a resolver; the webhook client checks them with [`AddressPolicy::allows`].

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use thiserror::Error;

use crate::config::AllowEntry;

/// A boxed error, as hyper-util's connector traits want them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A host name that resolved only to addresses the SSRF policy refuses (or to none).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct RefusedAddress(pub String);

/// Whether `ip` is in a range Mattermost refuses for integrations unless allowed
/// (its `reservedIPRanges`: RFC 6890 "this network", private, loopback, link-local,
/// unique-local, unspecified). IPv4-mapped IPv6 addresses are judged as the IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 0
                || o[0] == 10
                || o[0] == 127
                || (o[0] == 169 && o[1] == 254)
                || (o[0] == 172 && (16..=31).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The SSRF policy: which internal destinations the admin allowed.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed_hosts: Vec<String>,
    allowed_nets: Vec<ipnet::IpNet>,
}

impl AddressPolicy {
    /// Builds the policy from `allowed_untrusted_internal_connections`.
    pub fn new(entries: &[AllowEntry]) -> AddressPolicy {
        let mut p = AddressPolicy::default();
        for e in entries {
            match e {
                AllowEntry::Host(h) => p.allowed_hosts.push(h.to_ascii_lowercase()),
                AllowEntry::Net(n) => p.allowed_nets.push(*n),
            }
        }
        p
    }

    /// Whether a connection to `ip`, reached through host name `host`, is allowed.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let host = host.trim_end_matches('.');
        if self
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed_nets
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
    }
}

/// Resolves a host name to addresses; replaceable in tests.
pub trait Resolver: Send + Sync + 'static {
    /// All addresses of `host`, in the order they should be tried.
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Resolves names with `inner` and hands the connector only the addresses `policy` allows, so
/// nothing can be connected to between the check and the connect (no DNS-rebinding window).
/// Without a policy (Mattermost itself, which the admin configured) every address passes.
#[derive(Clone)]
pub struct GuardedResolver {
    inner: Arc<dyn Resolver>,
    policy: Option<Arc<AddressPolicy>>,
}

impl GuardedResolver {
    pub fn new(inner: Arc<dyn Resolver>, policy: Option<Arc<AddressPolicy>>) -> GuardedResolver {
        GuardedResolver { inner, policy }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = inner.lookup(host.clone()).await?;
            let allowed: Vec<SocketAddr> = ips
                .iter()
                .filter(|ip| policy.as_ref().is_none_or(|p| p.allows(&host, **ip)))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if allowed.is_empty() {
                let why = if ips.is_empty() {
                    format!("{host} has no address")
                } else {
                    format!("{host} resolves only to untrusted internal addresses")
                };
                return Err(Box::new(RefusedAddress(why)) as BoxError);
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_mattermosts() {
        let rows: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("2001:4860:4860::8888", false),
        ];
        for (ip, want) in rows {
            assert_eq!(is_internal(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn lookup(
            &self,
            _host: String,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let v = self.0.clone();
            Box::pin(async move { Ok(v) })
        }
    }

    /// What the guarded resolver hands the connector, for an answer of `ips` (no connection
    /// is ever made here).
    async fn guarded(ips: &[&str], allowed: &[AllowEntry]) -> Result<Vec<IpAddr>, String> {
        use hyper_util::client::legacy::connect::dns::Name;
        use std::str::FromStr;
        use tower_service::Service;
        let mut g = GuardedResolver::new(
            Arc::new(Fixed(ips.iter().map(|s| s.parse().unwrap()).collect())),
            Some(Arc::new(AddressPolicy::new(allowed))),
        );
        let name = Name::from_str("hooks.example.test").unwrap();
        match g.call(name).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn guarded_resolver_hands_over_only_allowed_addresses() {
        let internal = [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.1.1.1",
            "::ffff:169.254.169.254",
        ];
        for ip in internal {
            let got = guarded(&[ip], &[]).await;
            assert!(got.is_err(), "{ip} must be refused, got {got:?}");
        }
        let got = guarded(&["10.0.0.1", "93.184.216.34", "fe80::1"], &[]).await;
        assert_eq!(
            got.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        let allowed = [AllowEntry::Net("10.0.0.0/8".parse().unwrap())];
        let got = guarded(&["10.0.0.1", "192.168.0.1"], &allowed).await;
        assert_eq!(got.unwrap(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let by_name = [AllowEntry::Host("hooks.example.test".into())];
        let got = guarded(&["192.168.0.1"], &by_name).await;
        assert_eq!(got.unwrap(), vec!["192.168.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn allow_list_by_host_and_cidr() {
        let p = AddressPolicy::new(&[
            AllowEntry::Host("ci.internal".into()),
            AllowEntry::Net("10.0.0.0/8".parse().unwrap()),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.allows("CI.internal", ip("192.168.1.5")), "host match");
        assert!(p.allows("other", ip("10.9.9.9")), "CIDR match");
        assert!(
            p.allows("other", ip("::ffff:10.9.9.9")),
            "mapped v4 in CIDR"
        );
        assert!(!p.allows("other", ip("192.168.1.5")), "not allowed");
        assert!(p.allows("public", ip("8.8.8.8")), "public always allowed");
    }
}
