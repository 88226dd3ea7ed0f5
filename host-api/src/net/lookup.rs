//! `wasi:sockets/ip-name-lookup`: names on the instance's networks, its own
//! loopback, and host DNS only for names the outbound policy allows.

use super::bindings::wasi::sockets::ip_name_lookup;
use super::{NetView, Shared};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use wasmtime::component::Resource;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, Pollable, SocketResult};

pub struct ResolveAddressStream {
    state: Resolution,
}

enum Resolution {
    Done(VecDeque<IpAddr>),
    Failed(ErrorCode),
    Pending(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
}

/// What a name means to this instance, before any host lookup.
fn resolve_locally(ns: &Shared, name: &str) -> Option<Vec<IpAddr>> {
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(vec![ip]);
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    let found: Vec<IpAddr> = ns
        .memberships()
        .iter()
        .flat_map(|m| m.resolve(&name))
        .map(IpAddr::V4)
        .collect();
    (!found.is_empty()).then_some(found)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\0')
}

impl ip_name_lookup::Host for NetView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<ResolveAddressStream>> {
        self.table.get(&network)?;
        if !valid_name(&name) {
            return Err(ErrorCode::InvalidArgument.into());
        }
        let ns: Arc<Shared> = self.ns.shared.clone();
        let state = match resolve_locally(&ns, &name) {
            Some(ips) => Resolution::Done(ips.into()),
            None => {
                let ports = ns.policy().name_rules(&name);
                if ports.is_empty() {
                    Resolution::Failed(ErrorCode::NameUnresolvable)
                } else {
                    // Only names the user allowed reach the host's resolver,
                    // and what they resolve to becomes reachable.
                    Resolution::Pending(tokio::spawn(async move {
                        let ips: Vec<IpAddr> = tokio::net::lookup_host((name.as_str(), 0))
                            .await
                            .map_err(|_| ErrorCode::NameUnresolvable)?
                            .map(|a| a.ip())
                            .collect();
                        ns.policy().allow_resolved(&ips, &ports);
                        Ok(ips)
                    }))
                }
            }
        };
        Ok(self.table.push(ResolveAddressStream { state })?)
    }
}

impl ResolveAddressStream {
    fn settle(&mut self, result: Result<Result<Vec<IpAddr>, ErrorCode>, tokio::task::JoinError>) {
        self.state = match result {
            Ok(Ok(ips)) => Resolution::Done(ips.into()),
            Ok(Err(code)) => Resolution::Failed(code),
            Err(_) => Resolution::Failed(ErrorCode::PermanentResolverFailure),
        };
    }
}

impl ip_name_lookup::HostResolveAddressStream for NetView<'_> {
    fn resolve_next_address(
        &mut self,
        this: Resource<ResolveAddressStream>,
    ) -> SocketResult<Option<IpAddress>> {
        let stream = self.table.get_mut(&this)?;
        if let Resolution::Pending(handle) = &mut stream.state {
            match Pin::new(handle).poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => stream.settle(result),
                Poll::Pending => return Err(ErrorCode::WouldBlock.into()),
            }
        }
        match &mut stream.state {
            Resolution::Done(ips) => Ok(ips.pop_front().map(IpAddress::from)),
            Resolution::Failed(code) => Err((*code).into()),
            Resolution::Pending(_) => Err(ErrorCode::WouldBlock.into()),
        }
    }

    fn subscribe(
        &mut self,
        this: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    fn drop(&mut self, this: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        let stream = self.table.delete(this)?;
        if let Resolution::Pending(handle) = stream.state {
            handle.abort();
        }
        Ok(())
    }
}

#[async_trait]
impl Pollable for ResolveAddressStream {
    async fn ready(&mut self) {
        if let Resolution::Pending(handle) = &mut self.state {
            let result = handle.await;
            self.settle(result);
        }
    }
}
