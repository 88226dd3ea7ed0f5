//! Outbound policy: which real destinations a guest may reach.
//!
//! Deny by default. `--allow-outbound` adds rules: an IP address, a CIDR
//! range or a DNS name, each with an optional port. A DNS name is resolved by
//! the host only when the guest looks it up, and the addresses it resolved to
//! become reachable (on the rule's port) for that guest.

use super::lock;
use crate::input::excerpt;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// One `--allow-outbound` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    pub target: Target,
    /// `None` allows every port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Net { addr: IpAddr, prefix: u8 },
    Name(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid outbound rule `{rule}`: {reason} (expected HOST_OR_CIDR[:PORT], e.g. `10.0.0.0/8`, `db.example.com:5432`, `[::1]:80`)"
)]
pub struct RuleError {
    /// An excerpt of the rule (see [`crate::input::excerpt`]).
    pub rule: String,
    pub reason: &'static str,
}

impl OutboundRule {
    pub fn parse(text: &str) -> Result<OutboundRule, RuleError> {
        let err = |reason| RuleError {
            rule: excerpt(text).to_string(),
            reason,
        };
        let (host, port) = split_port(text).map_err(err)?;
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        let target = if let Some((addr, prefix)) = host.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| err("not an IP address before `/`"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or(err("bad prefix length"))?;
            Target::Net { addr, prefix }
        } else if let Ok(addr) = host.parse::<IpAddr>() {
            Target::Net {
                addr,
                prefix: if addr.is_ipv4() { 32 } else { 128 },
            }
        } else {
            let valid = host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(err("not an IP address, a CIDR range or a DNS name"));
            }
            Target::Name(host.to_ascii_lowercase())
        };
        Ok(OutboundRule { target, port })
    }

    /// Whether the rule allows `host` (a DNS name or an IP literal, as in a
    /// URL's authority, brackets allowed) on `port`. Names match exactly: an
    /// IP rule does not allow a name that resolves into it.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => self.allows_addr(SocketAddr::new(ip, port)),
            Err(_) => {
                self.port.is_none_or(|p| p == port)
                    && matches!(&self.target, Target::Name(name)
                        if *name == host.trim_end_matches('.').to_ascii_lowercase())
            }
        }
    }

    fn allows_addr(&self, dest: SocketAddr) -> bool {
        let port_ok = self.port.is_none_or(|p| p == dest.port());
        port_ok
            && matches!(self.target, Target::Net { addr, prefix } if in_net(dest.ip(), addr, prefix))
    }
}

impl fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Net { addr, prefix } => write!(f, "{addr}/{prefix}")?,
            Target::Name(name) => write!(f, "{name}")?,
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// `host:port`, `[v6]:port`, a bare host, or a bare IPv6 address.
fn split_port(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    let parse_port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or("bad port");
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed `[`")?;
        return match after {
            "" => Ok((host, None)),
            _ => Ok((
                host,
                Some(parse_port(
                    after.strip_prefix(':').ok_or("junk after `]`")?,
                )?),
            )),
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.rsplit_once(':').ok_or("bad port")?;
            Ok((host, Some(parse_port(port)?)))
        }
        // A bare IPv6 address (possibly with a prefix).
        _ => Ok((text, None)),
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V4(_)) => ip
            .to_ipv4_mapped()
            .is_some_and(|v4| in_net(v4.into(), net, prefix)),
        _ => false,
    }
}

/// The policy of one instance: its rules plus what its name lookups allowed.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    rules: Vec<OutboundRule>,
    resolved: Mutex<Vec<(IpAddr, Option<u16>)>>,
}

impl Policy {
    pub(crate) fn new(rules: Vec<OutboundRule>) -> Policy {
        Policy {
            rules,
            resolved: Mutex::default(),
        }
    }

    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    pub(crate) fn allows(&self, dest: SocketAddr) -> bool {
        self.rules.iter().any(|r| r.allows_addr(dest))
            || lock(&self.resolved)
                .iter()
                .any(|(ip, port)| *ip == dest.ip() && port.is_none_or(|p| p == dest.port()))
    }

    /// The rules that allow looking `name` up on the host.
    pub(crate) fn name_rules(&self, name: &str) -> Vec<Option<u16>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.rules
            .iter()
            .filter(|r| r.target == Target::Name(name.clone()))
            .map(|r| r.port)
            .collect()
    }

    /// Allows the addresses a permitted name resolved to.
    pub(crate) fn allow_resolved(&self, ips: &[IpAddr], ports: &[Option<u16>]) {
        let mut resolved = lock(&self.resolved);
        for ip in ips {
            for port in ports {
                if !resolved.contains(&(*ip, *port)) {
                    resolved.push((*ip, *port));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &str, dest: &str) -> bool {
        Policy::new(vec![OutboundRule::parse(rule).unwrap()]).allows(dest.parse().unwrap())
    }

    #[test]
    fn hosts() {
        let rule = |r| OutboundRule::parse(r).unwrap();
        assert!(rule("api.example.com").allows_host("API.example.com.", 443));
        assert!(!rule("api.example.com:443").allows_host("api.example.com", 80));
        assert!(!rule("example.com").allows_host("api.example.com", 80));
        assert!(rule("127.0.0.0/8:8080").allows_host("127.0.0.2", 8080));
        assert!(rule("[::1]:80").allows_host("[::1]", 80));
        assert!(!rule("10.0.0.0/8").allows_host("localhost", 80));
    }

    #[test]
    fn rules() {
        assert!(allows("127.0.0.1:5432", "127.0.0.1:5432"));
        assert!(!allows("127.0.0.1:5432", "127.0.0.1:5433"));
        assert!(allows("127.0.0.1", "127.0.0.1:1"));
        assert!(allows("10.0.0.0/8", "10.200.3.4:80"));
        assert!(!allows("10.0.0.0/8", "11.0.0.1:80"));
        assert!(allows("0.0.0.0/0", "192.0.2.1:443"));
        assert!(allows("[::1]:80", "[::1]:80"));
        assert!(allows("::1", "[::1]:9"));
        assert!(allows("2001:db8::/32", "[2001:db8::5]:9"));
        assert!(!allows("example.com:443", "93.184.216.34:443"));
        for bad in [
            "",
            ":80",
            "10.0.0.0/33",
            "a..b",
            "host:0",
            "host:99999",
            "[::1",
            "x_y",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}:80", "a_".repeat(1 << 20));
        let e = OutboundRule::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("bytes)"), "{}", &e[..300]);
        assert_eq!(
            OutboundRule::parse("Example.COM:443").unwrap().to_string(),
            "example.com:443"
        );
    }

    #[test]
    fn names_allow_what_they_resolved_to() {
        let policy = Policy::new(vec![OutboundRule::parse("db.example.com:5432").unwrap()]);
        assert_eq!(policy.name_rules("DB.example.com."), vec![Some(5432)]);
        assert!(policy.name_rules("other.example.com").is_empty());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!policy.allows(SocketAddr::new(ip, 5432)));
        policy.allow_resolved(&[ip], &[Some(5432)]);
        assert!(policy.allows(SocketAddr::new(ip, 5432)));
        assert!(!policy.allows(SocketAddr::new(ip, 22)));
    }
}
