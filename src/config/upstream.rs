//! Validation of `upstream`: one Mattermost base URL, or the nodes of a cluster.

use serde_saphyr::{Location, Spanned};

use super::error::ConfigError;
use super::file;
use super::validate::{Pos, Validator};
use super::Upstream;

impl Validator<'_> {
    /// `upstream`: one base URL or a non-empty list (the nodes of a cluster, one scheme).
    pub(super) fn upstreams(
        &self,
        raw: Option<&Spanned<file::OneOrMany>>,
        top: Pos,
    ) -> Result<Vec<Upstream>, ConfigError> {
        let Some(raw) = raw else {
            return Err(self.err(top, "upstream", "required"));
        };
        let texts: Vec<file::Str> = match &raw.value {
            file::OneOrMany::One(s) => vec![file::Str {
                value: s.clone(),
                referenced: raw.referenced,
                defined: raw.defined,
            }],
            file::OneOrMany::Many(list) => list.clone(),
        };
        let mut out: Vec<Upstream> = Vec::with_capacity(texts.len());
        for s in &texts {
            let up = self.upstream(&self.subst(s, "upstream")?, s.referenced)?;
            if out.iter().any(|o| o.base_url == up.base_url) {
                return Err(self.err(s.referenced, "upstream", "lists a node twice"));
            }
            if out.first().is_some_and(|o| o.tls != up.tls) {
                return Err(self.err(s.referenced, "upstream", "mixes http:// and https:// nodes"));
            }
            out.push(up);
        }
        if out.is_empty() {
            return Err(self.err(raw.referenced, "upstream", "must list at least one URL"));
        }
        Ok(out)
    }

    fn upstream(&self, raw: &str, loc: Location) -> Result<Upstream, ConfigError> {
        let url =
            url::Url::parse(raw).map_err(|_| self.err(loc, "upstream", "not an http(s) URL"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(self.err(loc, "upstream", "not an http(s) URL")),
        };
        if !(url.path() == "/" || url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(self.err(
                loc,
                "upstream",
                "must be a base URL without path, query or fragment (clients' paths pass through unchanged)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.err(loc, "upstream", "must not carry credentials"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(self.err(loc, "upstream", "has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| self.err(loc, "upstream", "has no port"))?;
        let mut base_url = url.as_str().to_string();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Ok(Upstream {
            base_url,
            tls,
            host,
            port,
        })
    }
}
