//! Outgoing HTTP for served functions (`wasi:http/outgoing-handler`).
//!
//! Deny by default: a request goes out only when one of the function's
//! rules (the same syntax as `--allow-outbound`: an IP, a CIDR range or a DNS
//! name, with an optional port) allows the host and port of its URL. A
//! refused request fails inside the guest with the `HTTP-request-denied`
//! error code; it never traps. Allowed requests go through wasmtime-wasi-http's
//! own client (HTTP/1.1, with TLS for `https`), which follows no redirects.

use crate::fds::{FdBudget, FdGrant};
use crate::net::OutboundRule;
use http::uri::Scheme;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// The outbound HTTP policy of one function. Cheap to clone: every instance
/// of the function gets a copy.
#[derive(Debug, Clone, Default)]
pub struct OutboundHttp {
    rules: Arc<[OutboundRule]>,
    /// The instance's descriptor budget, which each connection counts
    /// against for as long as it is open.
    fds: Option<Arc<FdBudget>>,
}

impl OutboundHttp {
    pub fn new(rules: Vec<OutboundRule>) -> OutboundHttp {
        OutboundHttp {
            rules: rules.into(),
            fds: None,
        }
    }

    /// This policy for one instance, its connections counted against `fds`.
    pub fn for_instance(&self, fds: Arc<FdBudget>) -> OutboundHttp {
        OutboundHttp {
            rules: self.rules.clone(),
            fds: Some(fds),
        }
    }

    pub fn rules(&self) -> &[OutboundRule] {
        &self.rules
    }

    /// Whether a request to `uri` may leave.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => 443,
            _ => 80,
        });
        self.rules.iter().any(|r| r.allows_host(host, port))
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            tracing::debug!(uri = %request.uri(), "outgoing request denied");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        // The connection's descriptor, held until the connection is done.
        let fd = match &self.fds {
            Some(fds) => match fds.take(1) {
                Ok(grant) => grant,
                Err(_) => return Box::new(async { Err(Error::ConnectionLimitReached) }),
            },
            None => FdGrant::none(),
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io = async move {
                let _fd = fd;
                io.await
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_by_default_and_default_ports() {
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        assert!(!OutboundHttp::default().allows(&uri("http://127.0.0.1/")));
        let policy = OutboundHttp::new(vec![
            OutboundRule::parse("api.example.com:443").unwrap(),
            OutboundRule::parse("127.0.0.1:8080").unwrap(),
        ]);
        assert!(policy.allows(&uri("https://api.example.com/v1")));
        assert!(!policy.allows(&uri("http://api.example.com/v1")));
        assert!(policy.allows(&uri("http://127.0.0.1:8080/x")));
        assert!(!policy.allows(&uri("http://127.0.0.1:8081/x")));
        assert!(!policy.allows(&uri("/relative")));
    }
}
