//! Authorization by identity: the names in a verified client certificate (URI SANs such as
//! SPIFFE IDs first, then DNS SANs) against a listener's or route's `allow` and `deny`
//! patterns. Deny wins; a non-empty `allow` must match; no certificate has no identity.

use crate::config::AuthzConfig;

/// One `authz` block, compiled.
#[derive(Clone, Debug)]
pub struct Authz {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    /// `listener` or `routes[N]`: where the rule sits, for the denial metric and log.
    scope: String,
}

#[derive(Clone, Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn new(p: &str) -> Pattern {
        match p.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(p.to_owned()),
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == id,
            Pattern::Prefix(p) => id.starts_with(p.as_str()),
        }
    }
}

/// Why a client was refused: the rule, as `scope.deny[N]` or `scope.allow` (none matched).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The rule's path in the config (a bounded label value).
    pub rule: String,
}

impl Authz {
    /// Compiles `cfg` for `scope` (`listener` or `routes[N]`).
    pub fn new(cfg: &AuthzConfig, scope: String) -> Authz {
        Authz {
            allow: cfg.allow.iter().map(|p| Pattern::new(p)).collect(),
            deny: cfg.deny.iter().map(|p| Pattern::new(p)).collect(),
            scope,
        }
    }

    /// Checks a client's identities (empty without a certificate).
    pub fn check(&self, identities: &[String]) -> Result<(), Denied> {
        if let Some(i) = self
            .deny
            .iter()
            .position(|p| identities.iter().any(|id| p.matches(id)))
        {
            return Err(Denied {
                rule: format!("{}.deny[{i}]", self.scope),
            });
        }
        if !self.allow.is_empty()
            && !self
                .allow
                .iter()
                .any(|p| identities.iter().any(|id| p.matches(id)))
        {
            return Err(Denied {
                rule: format!("{}.allow", self.scope),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(allow: &[&str], deny: &[&str]) -> Authz {
        let cfg = AuthzConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        Authz::new(&cfg, "listener".into())
    }

    #[test]
    fn deny_wins_allow_must_match_and_no_identity_is_refused() {
        let a = authz(
            &["spiffe://td/ns/shop/*", "spiffe://td/ns/ops/sa/admin"],
            &["spiffe://td/ns/shop/sa/intruder"],
        );
        let id = |s: &str| vec![s.to_string()];
        assert_eq!(a.check(&id("spiffe://td/ns/shop/sa/web")), Ok(()));
        assert_eq!(a.check(&id("spiffe://td/ns/ops/sa/admin")), Ok(()));
        assert_eq!(
            a.check(&id("spiffe://td/ns/shop/sa/intruder"))
                .unwrap_err()
                .rule,
            "listener.deny[0]"
        );
        assert_eq!(
            a.check(&id("spiffe://td/ns/ops/sa/adminx"))
                .unwrap_err()
                .rule,
            "listener.allow"
        );
        assert_eq!(a.check(&[]).unwrap_err().rule, "listener.allow");
        // Deny only: everyone else, even without an identity, is let in.
        let d = authz(&[], &["spiffe://td/ns/bad/*"]);
        assert_eq!(d.check(&[]), Ok(()));
        assert!(d.check(&id("spiffe://td/ns/bad/sa/x")).is_err());
    }
}
