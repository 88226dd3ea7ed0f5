//! Host bindings for the `wasi:sockets` interfaces wrun implements itself.
//!
//! `wasi:io`, `wasi:clocks` and `wasi:sockets/network` are wasmtime-wasi's
//! (their resources live in the same table), so streams and pollables made
//! here are ordinary wasmtime-wasi streams and pollables to the guest.

wasmtime::component::bindgen!({
    path: "wit",
    world: "wrun:vnet/vnet",
    imports: { default: trappable },
    trappable_error_type: {
        "wasi:sockets/network.error-code" => wasmtime_wasi::p2::SocketError,
    },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
        "wasi:sockets/tcp.tcp-socket": crate::net::tcp::TcpSocket,
        "wasi:sockets/udp.udp-socket": crate::net::udp::UdpSocket,
        "wasi:sockets/udp.incoming-datagram-stream": crate::net::udp::IncomingDatagrams,
        "wasi:sockets/udp.outgoing-datagram-stream": crate::net::udp::OutgoingDatagrams,
        "wasi:sockets/ip-name-lookup.resolve-address-stream": crate::net::lookup::ResolveAddressStream,
    },
    require_store_data_send: true,
});
