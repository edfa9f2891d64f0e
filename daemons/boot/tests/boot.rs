//! Tests against real Debian packages (bookworm kernel, busybox-static,
//! ipxe, pxelinux, syslinux-common), fetched with `apt-get download` into
//! the package cache (`IRONROOT_DEB_CACHE`, default /var/cache/ironroot/debs),
//! and a QEMU (TCG) boot of the produced kernel and initramfs.
//! With `IRONROOT_REQUIRE_PEERS=1` a missing package or program fails the
//! test; without it the test prints why and returns.

mod peers;
