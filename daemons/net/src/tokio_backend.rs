//! Real sockets, clock and VIP control (tokio, socket2, rtnetlink, AF_PACKET).
