//! turmoil sockets and clock plus a simulated L2 segment for the VIP.
