//! Published ports (`-p`): host sockets that feed a guest's virtual port.

use crate::input::excerpt;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One host port mapped to one guest port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    /// 0: the host picks a free port.
    pub host_port: u16,
    pub guest_port: u16,
    pub protocol: Protocol,
}

/// The most ports one `-p` may publish (a range), so a typo cannot open
/// thousands of sockets.
pub const MAX_PORTS_PER_FLAG: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid port mapping `{spec}`: {reason} (expected [IP:][HOST_PORT:]GUEST_PORT[/tcp|/udp], \
     e.g. `8080:80`, `127.0.0.1:8080:80`, `5353:53/udp`, `8000-8002:80-82`)"
)]
pub struct PortSpecError {
    /// An excerpt of the spec (see [`crate::input::excerpt`]).
    pub spec: String,
    pub reason: String,
}

impl PortMapping {
    /// Parses Docker's `-p` forms into one mapping per port:
    /// `GUEST`, `HOST:GUEST`, `IP:HOST:GUEST`, `IP::GUEST`, `[V6]:HOST:GUEST`,
    /// ranges `H1-H2:G1-G2` (or `G1-G2` for host-picked ports), and an
    /// optional `/tcp` or `/udp` suffix. Without an IP the port is published
    /// on all IPv4 interfaces, as Docker does.
    pub fn parse(spec: &str) -> Result<Vec<PortMapping>, PortSpecError> {
        let err = |reason: &str| PortSpecError {
            spec: excerpt(spec).to_string(),
            reason: reason.to_owned(),
        };
        let (body, protocol) = match spec.rsplit_once('/') {
            Some((body, "tcp")) => (body, Protocol::Tcp),
            Some((body, "udp")) => (body, Protocol::Udp),
            Some((_, other)) => {
                return Err(err(&format!("unknown protocol `{}`", excerpt(other))));
            }
            None => (spec, Protocol::Tcp),
        };
        let (ip, rest) = match body.strip_prefix('[') {
            Some(v6) => {
                let (ip, rest) = v6.split_once("]:").ok_or_else(|| err("unclosed `[`"))?;
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| err(&format!("`{}` is not an IP address", excerpt(ip))))?;
                (Some(ip), rest)
            }
            None => match body.matches(':').count() {
                0 | 1 => (None, body),
                2 => {
                    let (ip, rest) = body.split_once(':').ok_or_else(|| err("bad syntax"))?;
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| err(&format!("`{}` is not an IP address", excerpt(ip))))?;
                    (Some(ip), rest)
                }
                _ => return Err(err("too many `:` (write IPv6 addresses in brackets)")),
            },
        };
        let (host, guest) = match rest.split_once(':') {
            Some((host, guest)) => (host, guest),
            None if ip.is_some() => return Err(err("missing guest port")),
            None => ("", rest),
        };
        let guests = parse_range(guest, false).map_err(|r| err(&format!("guest port: {r}")))?;
        let hosts = if host.is_empty() {
            vec![0; guests.len()]
        } else {
            parse_range(host, true).map_err(|r| err(&format!("host port: {r}")))?
        };
        if hosts.len() != guests.len() {
            return Err(err(&format!(
                "the host range has {} ports but the guest range has {}",
                hosts.len(),
                guests.len()
            )));
        }
        if guests.len() > MAX_PORTS_PER_FLAG {
            return Err(err(&format!("more than {MAX_PORTS_PER_FLAG} ports")));
        }
        let host_ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(hosts
            .into_iter()
            .zip(guests)
            .map(|(host_port, guest_port)| PortMapping {
                host_ip,
                host_port,
                guest_port,
                protocol,
            })
            .collect())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}/{}",
            SocketAddr::new(self.host_ip, self.host_port),
            self.guest_port,
            self.protocol
        )
    }
}

fn parse_range(text: &str, zero_ok: bool) -> Result<Vec<u16>, String> {
    let port = |p: &str| -> Result<u16, String> {
        match u16::from_str(p) {
            Ok(0) if !zero_ok => Err("0 is not a port".to_owned()),
            Ok(p) => Ok(p),
            Err(_) => Err(format!("`{}` is not a port number (1-65535)", excerpt(p))),
        }
    };
    match text.split_once('-') {
        None => Ok(vec![port(text)?]),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a == 0 || b < a {
                return Err(format!("`{}` is not an increasing range", excerpt(text)));
            }
            Ok((a..=b).collect())
        }
    }
}

/// Explains a failure to bind a published host port, with what to do.
pub(crate) fn bind_error(mapping: &PortMapping, error: &io::Error) -> String {
    let addr = SocketAddr::new(mapping.host_ip, mapping.host_port);
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "cannot publish {addr}/{}: the port is already in use (by another program or another app)",
            mapping.protocol
        ),
        io::ErrorKind::PermissionDenied if mapping.host_port < 1024 => format!(
            "cannot publish {addr}/{}: ports below 1024 are privileged and this user may not bind \
             them; publish a port of 1024 or above (e.g. `-p {}:{}`), or lower the \
             `net.ipv4.ip_unprivileged_port_start` sysctl",
            mapping.protocol,
            u32::from(mapping.host_port) + 8000,
            mapping.guest_port
        ),
        io::ErrorKind::AddrNotAvailable => format!(
            "cannot publish {addr}/{}: {} is not an address of this host",
            mapping.protocol, mapping.host_ip
        ),
        _ => format!("cannot publish {addr}/{}: {error}", mapping.protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let mut all = PortMapping::parse(spec).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    #[test]
    fn docker_forms() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            one("8080:80"),
            PortMapping {
                host_ip: any,
                host_port: 8080,
                guest_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(one("80").host_port, 0);
        assert_eq!(one("127.0.0.1:8080:80").host_ip, lo);
        assert_eq!(
            one("127.0.0.1::80"),
            PortMapping {
                host_ip: lo,
                host_port: 0,
                guest_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(one("127.0.0.1:0:80").host_port, 0);
        assert_eq!(one("5353:53/udp").protocol, Protocol::Udp);
        assert_eq!(
            one("[::1]:8080:80").host_ip,
            "::1".parse::<IpAddr>().unwrap()
        );
        let range = PortMapping::parse("8000-8002:80-82/tcp").unwrap();
        assert_eq!(
            range
                .iter()
                .map(|m| (m.host_port, m.guest_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81), (8002, 82)]
        );
        assert_eq!(PortMapping::parse("80-81").unwrap().len(), 2);
    }

    #[test]
    fn bad_forms_name_the_problem() {
        for (spec, needle) in [
            ("", "not a port number"),
            ("0", "0 is not a port"),
            ("8080:", "not a port number"),
            ("x:80", "not a port number"),
            ("70000:80", "not a port number"),
            ("8080:80/sctp", "unknown protocol `sctp`"),
            ("1.2.3:8080:80", "not an IP address"),
            ("8000-8001:80", "2 ports but the guest range has 1"),
            ("82-80", "increasing range"),
            ("1:2:3:4", "too many"),
            ("[::1:80", "unclosed"),
            ("1-2000", "more than 1024"),
        ] {
            let e = PortMapping::parse(spec).unwrap_err();
            assert!(e.to_string().contains(needle), "`{spec}`: {e}");
        }
        // However long the spec, or the part of it that is wrong, the message
        // stays short.
        let long = "9".repeat(1 << 20);
        for spec in [
            long.clone(),
            format!("{long}:80"),
            format!("80:{long}"),
            format!("80/{long}"),
            format!("{long}:1:2"),
            format!("[{long}]:1:2"),
        ] {
            let e = PortMapping::parse(&spec).unwrap_err().to_string();
            assert!(e.len() < 500, "{} bytes: {}", e.len(), &e[..500]);
        }
    }

    #[test]
    fn bind_errors_say_what_to_do() {
        let m = one("80:8080");
        let msg = bind_error(&m, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(
            msg.contains("0.0.0.0:80/tcp")
                && msg.contains("privileged")
                && msg.contains("ip_unprivileged_port_start"),
            "{msg}"
        );
        let msg = bind_error(&one("9000:80"), &io::Error::from(io::ErrorKind::AddrInUse));
        assert!(
            msg.contains("0.0.0.0:9000/tcp") && msg.contains("already in use"),
            "{msg}"
        );
    }
}
