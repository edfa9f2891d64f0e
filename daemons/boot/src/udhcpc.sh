#!/bin/sh
# udhcpc event script of the ironroot initramfs (generated): configures
# the address and default route and records the lease for /init.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${mask:-24}" ${broadcast:+broadcast $broadcast} dev "$interface"
	first_router=
	for r in $router; do
		first_router="$r"
		break
	done
	[ -n "$first_router" ] && ip -4 route replace default via "$first_router" dev "$interface"
	mkdir -p /run/ironroot
	{
		echo "LEASE_IP='$ip'"
		echo "LEASE_MASK='${mask:-24}'"
		echo "LEASE_ROUTER='$first_router'"
		echo "LEASE_SERVER='$serverid'"
		echo "LEASE_NEXT_SERVER='$siaddr'"
	} >/run/ironroot/lease
	;;
esac
exit 0
