#!/bin/sh
# ironroot NFS-root init for kernel @KERNEL_VERSION@ (generated).
# Steps, each announced on the console: modules, link up, address, mount,
# switch root. Every wait and retry is bounded; on failure a rescue shell.
# Kernel command line it reads (all optional but the server, which may
# also come from DHCP's next-server):
#   ironroot.server=VIP      NFS server: VIP:/ is mounted as the root
#   ironroot.client=NAME     sent as DHCP hostname, recorded in /run/ironroot/boot
#   ironroot.image=NAME      recorded in /run/ironroot/boot
#   ironroot.nfsopts=OPTS    mount options (addr=VIP is appended)
#   ironroot.path=/          exported path
#   ironroot.iface=eth0      NIC to use (default: first with carrier)
#   ironroot.mount_tries=N   ironroot.dhcp_tries=N
#   ironroot.break=modules|premount   print the plan and power off there
#   ironroot.break=shell     shell before the mount
#   ironroot.onfail=shell|poweroff|reboot   what a failed step does
export PATH=/bin:/sbin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /newroot
/bin/busybox mount -t proc -o nosuid,nodev,noexec proc /proc
/bin/busybox mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
/bin/busybox mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
/bin/busybox --install -s /bin
exec </dev/console >/dev/console 2>&1

say() { echo "ironroot: $*"; }

ONFAIL=shell
rescue() {
	say "FAILED: $*"
	case "$ONFAIL" in
	poweroff) say "powering off"; poweroff -f ;;
	reboot) say "rebooting"; reboot -f ;;
	esac
	say "rescue shell: fix and 'exit' to reboot"
	setsid cttyhack sh
	reboot -f
}

SERVER=
CLIENT=
IMAGE=
NFSOPTS='@NFS_OPTIONS@'
NFSPATH=/
IFACE=
BREAK=
MOUNT_TRIES=@MOUNT_TRIES@
MOUNT_DELAY_SECS=@MOUNT_DELAY_SECS@
DHCP_TRIES=@DHCP_TRIES@
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ironroot.server=*) SERVER="${arg#*=}" ;;
	ironroot.client=*) CLIENT="${arg#*=}" ;;
	ironroot.image=*) IMAGE="${arg#*=}" ;;
	ironroot.nfsopts=*) NFSOPTS="${arg#*=}" ;;
	ironroot.path=*) NFSPATH="${arg#*=}" ;;
	ironroot.iface=*) IFACE="${arg#*=}" ;;
	ironroot.break=*) BREAK="${arg#*=}" ;;
	ironroot.onfail=*) ONFAIL="${arg#*=}" ;;
	ironroot.mount_tries=*) MOUNT_TRIES="${arg#*=}" ;;
	ironroot.dhcp_tries=*) DHCP_TRIES="${arg#*=}" ;;
	esac
done
say "client=${CLIENT:-?} image=${IMAGE:-?} server=${SERVER:-from DHCP}"

say "modules: loading @MODULE_COUNT@ for kernel $(uname -r)"
while read -r mod; do
	insmod "/lib/modules/$mod.ko" || rescue "modules: insmod $mod failed"
done </etc/ironroot/modules
say "modules loaded: $(tr '\n' ' ' </etc/ironroot/modules)"

# NIC drivers probe asynchronously: wait for interfaces to appear (the one
# named by ironroot.iface=, else any but loopback), bring them all up and
# use the first that has carrier, so a server with an unplugged first port
# still boots.
i=0
ifaces=
while [ -z "$ifaces" ] && [ "$i" -lt 300 ]; do
	for dev in /sys/class/net/*; do
		name="${dev##*/}"
		[ "$name" = lo ] || [ ! -e "$dev" ] && continue
		[ -z "$IFACE" ] || [ "$name" = "$IFACE" ] && ifaces="$ifaces $name"
	done
	[ -n "$ifaces" ] || { i=$((i + 1)); usleep 100000; }
done
[ -n "$ifaces" ] || rescue "link: no network interface ${IFACE:+named $IFACE }after 30 s (NIC driver missing?)"
ip link set lo up
for name in $ifaces; do
	ip link set "$name" up || say "link: cannot bring up $name"
done
IFACE=
i=0
while [ -z "$IFACE" ] && [ "$i" -lt 300 ]; do
	for name in $ifaces; do
		[ "$(cat "/sys/class/net/$name/carrier" 2>/dev/null)" = 1 ] && IFACE="$name" && break
	done
	[ -n "$IFACE" ] || { i=$((i + 1)); usleep 100000; }
done
[ -n "$IFACE" ] || rescue "link: no carrier on$ifaces after 30 s"
say "link up: $IFACE $(cat "/sys/class/net/$IFACE/address")"

if [ "$BREAK" = modules ]; then
	say "plan: modules=$(tr '\n' ',' </etc/ironroot/modules) iface=$IFACE server=$SERVER opts=$NFSOPTS"
	say "break=modules: powering off"
	poweroff -f
fi

i=1
until udhcpc -i "$IFACE" -s /etc/ironroot/udhcpc.script -n -q -t 4 -T 2 -A 1 \
	${CLIENT:+-x hostname:$CLIENT}; do
	[ "$i" -lt "$DHCP_TRIES" ] || rescue "address: no DHCP lease on $IFACE after $DHCP_TRIES tries"
	say "address: no lease yet (try $i/$DHCP_TRIES)"
	i=$((i + 1))
done
. /run/ironroot/lease
say "address: $LEASE_IP/$LEASE_MASK on $IFACE via ${LEASE_ROUTER:-none} (DHCP server $LEASE_SERVER)"
[ -n "$SERVER" ] || SERVER="$LEASE_NEXT_SERVER"
[ -n "$SERVER" ] || rescue "mount: no ironroot.server= and no next-server from DHCP"

say "plan: server=$SERVER path=$NFSPATH opts=$NFSOPTS,addr=$SERVER"
case "$BREAK" in
premount)
	say "break=premount: powering off"
	poweroff -f
	;;
shell)
	say "break=shell: 'exit' to continue booting"
	setsid cttyhack sh
	;;
esac

i=1
while :; do
	say "mount: $SERVER:$NFSPATH on /newroot, try $i/$MOUNT_TRIES ($NFSOPTS)"
	mount -t nfs -o "$NFSOPTS,addr=$SERVER" "$SERVER:$NFSPATH" /newroot && break
	[ "$i" -lt "$MOUNT_TRIES" ] || rescue "mount: $SERVER:$NFSPATH failed $MOUNT_TRIES times"
	i=$((i + 1))
	sleep "$MOUNT_DELAY_SECS"
done
say "mount: root mounted read-only from $SERVER"
[ -e /newroot/sbin/init ] || [ -L /newroot/sbin/init ] ||
	rescue "mount: the image has no /sbin/init"

# Writable scratch on the read-only root, only where the image has a mount
# point. /var gets the image's directory skeleton (not its files) so that
# programs find /var/log, /var/tmp, /var/lib/... present.
for dir in run tmp var; do
	if [ ! -d "/newroot/$dir" ]; then
		say "tmpfs: image has no /$dir, left read-only"
		continue
	fi
	mode=0755
	[ "$dir" = tmp ] && mode=1777
	if [ "$dir" = var ]; then
		mkdir -p /run/var-skeleton
		(cd /newroot/var && find . -xdev -type d | head -n 5000) >/run/var-skeleton/dirs
	fi
	mount -t tmpfs -o "nosuid,nodev,mode=$mode,size=25%" tmpfs "/newroot/$dir" ||
		rescue "tmpfs: cannot mount /$dir"
	if [ "$dir" = var ]; then
		(cd /newroot/var && xargs mkdir -p </run/var-skeleton/dirs)
		chmod 1777 /newroot/var/tmp 2>/dev/null
	fi
done
mkdir -p /newroot/run/ironroot
printf 'SERVER=%s\nCLIENT=%s\nIMAGE=%s\nIFACE=%s\n' "$SERVER" "$CLIENT" "$IMAGE" "$IFACE" \
	>/newroot/run/ironroot/boot
say "tmpfs: /run /tmp /var ready"

for fs in dev proc sys; do
	mount --move "/$fs" "/newroot/$fs" 2>/dev/null || umount -l "/$fs"
done
say "switch root: exec /sbin/init"
exec switch_root /newroot /sbin/init
rescue "switch root: exec failed"
