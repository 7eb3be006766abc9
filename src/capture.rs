//! Transparent capture: the destination a client dialled before iptables sent its connection
//! here (`SO_ORIGINAL_DST` after REDIRECT; the socket's own address under TPROXY), and the
//! listening socket TPROXY needs (`IP_TRANSPARENT`).

use crate::config::CaptureMethod;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The connection's original destination; `None` when it was not captured (a client that
/// connected to the listener's own address: nothing to forward it to).
pub fn original_dst(stream: &TcpStream, method: CaptureMethod) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    match method {
        CaptureMethod::Tproxy => Some(local),
        CaptureMethod::Redirect => {
            let dst = match local {
                SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).ok().map(|a| {
                    SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                        u16::from_be(a.sin_port),
                    ))
                }),
                SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst).ok().map(|a| {
                    SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr.s6_addr),
                        u16::from_be(a.sin6_port),
                        0,
                        0,
                    ))
                }),
            }?;
            // Not NATed: the kernel answers with the socket's own address.
            (dst != local).then_some(dst)
        }
    }
}

/// A listening socket on `addr`; with TPROXY, marked `IP_TRANSPARENT` before it is bound so
/// it may accept connections addressed to any destination (needs CAP_NET_ADMIN).
pub fn bind(addr: SocketAddr, method: Option<CaptureMethod>) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if method == Some(CaptureMethod::Tproxy) {
        setsockopt(&socket, sockopt::IpTransparent, &true).map_err(std::io::Error::from)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}
