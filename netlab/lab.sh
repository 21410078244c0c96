#!/usr/bin/env bash
# The NAT lab: a small internet in network namespaces (root only).
#
#   netlab/lab.sh up   PREFIX    build it (tears down any leftover lab of that prefix first)
#   netlab/lab.sh down PREFIX    remove every namespace of it (always safe to run)
#   netlab/lab.sh loss PREFIX PERCENT HOST...   drop PERCENT % of the packets each named
#                                host's NAT router forwards, both ways (0 removes the rule)
#
# Nothing touches the host's own network namespace. Namespaces are named PREFIX-<host>:
#
#   inet      the "internet": one bridge, 60.0.0.0/24 (addresses that look global, so the
#             lab behaves like the internet; they never leave the namespaces)
#   pub       60.0.0.10: the public hosts (relay, bootstrap server)
#   r-<host>  one NAT router per LAN: wan 60.0.0.2x on inet, LAN bridge 192.168.N.1/24;
#             drops unsolicited inbound packets and sends anything that is not in
#             60.0.0.0/24 into a blackhole (private addresses of other LANs time out, as on
#             the internet)
#   eim1 eim2 behind endpoint-independent-mapping NATs (MASQUERADE keeps the source port,
#             one mapping for every destination): hole punching can work
#   sym1 sym2 behind symmetric NATs (MASQUERADE --random-fully: a new random port per
#             destination): hole punching cannot work, the relay carries the traffic
#   lan1 lan2 two hosts on one LAN behind one EIM NAT
set -euo pipefail

cmd=${1:-}
prefix=${2:-}
[[ $prefix =~ ^[a-z0-9]{1,12}$ ]] || {
    echo "usage: $0 up|down|loss PREFIX [PERCENT HOST...] (PREFIX: 1-12 of a-z0-9)" >&2
    exit 2
}

ns() { echo "$prefix-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

# LANs: name, subnet number, NAT kind, hosts.
LANS=("eim1 1 eim eim1" "eim2 2 eim eim2" "sym1 3 sym sym1" "sym2 4 sym sym2" "lan 5 eim lan1 lan2")

down() {
    local n
    for n in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-" || true); do
        # Processes left in a namespace would keep its interfaces alive.
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}

# veth between two namespaces: ns_a if_a ns_b if_b
link() {
    ip link add "$2" netns "$(ns "$1")" type veth peer name "$4" netns "$(ns "$3")"
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}

bridge() { # ns name
    in_ns "$1" ip link add "$2" type bridge
    in_ns "$1" ip link set "$2" up
}

new_ns() {
    ip netns add "$(ns "$1")"
    in_ns "$1" ip link set lo up
}

up() {
    down
    new_ns inet
    bridge inet br0
    # Routers and public hosts hang off the inet bridge through one veth each.
    new_ns pub
    link inet pub pub eth0
    in_ns inet ip link set pub master br0
    in_ns pub ip addr add 60.0.0.10/24 dev eth0
    in_ns pub ip route add blackhole default

    local i=0 lan_def name subnet kind hosts host h
    for lan_def in "${LANS[@]}"; do
        read -r name subnet kind hosts <<<"$lan_def"
        i=$((i + 1))
        local router="r-$name"
        new_ns "$router"
        link inet "$name" "$router" wan
        in_ns inet ip link set "$name" master br0
        in_ns "$router" ip addr add "60.0.0.2$i/24" dev wan
        in_ns "$router" ip route add blackhole default
        bridge "$router" br0
        in_ns "$router" ip addr add "192.168.$subnet.1/24" dev br0
        in_ns "$router" sysctl -qw net.ipv4.ip_forward=1
        local masq=(-j MASQUERADE)
        [ "$kind" = sym ] && masq+=(--random-fully)
        in_ns "$router" iptables -t nat -A POSTROUTING -o wan "${masq[@]}"
        # A home router: nothing unsolicited gets in, to the LAN or to the router itself.
        in_ns "$router" iptables -A FORWARD -i wan -m conntrack --ctstate NEW,INVALID -j DROP
        in_ns "$router" iptables -A INPUT -i wan -m conntrack --ctstate NEW,INVALID -j DROP
        h=1
        for host in $hosts; do
            h=$((h + 1))
            new_ns "$host"
            link "$router" "v$h" "$host" eth0
            in_ns "$router" ip link set "v$h" master br0
            in_ns "$host" ip addr add "192.168.$subnet.$h/24" dev eth0
            in_ns "$host" ip route add default via "192.168.$subnet.1"
        done
    done
}

loss() {
    local percent=$1
    shift
    [[ $percent =~ ^[0-9]{1,2}$ ]] || { echo "PERCENT must be 0-99" >&2; exit 2; }
    local p host lan_def name subnet kind hosts
    p=$(printf '0.%02d' "$percent")
    for host in "$@"; do
        for lan_def in "${LANS[@]}"; do
            read -r name subnet kind hosts <<<"$lan_def"
            [[ " $hosts " == *" $host "* ]] || continue
            # Replace any earlier loss rule.
            in_ns "r-$name" iptables -S FORWARD | { grep -- '-m statistic' || true; } | sed 's/^-A/-D/' |
                while read -r -a rule; do in_ns "r-$name" iptables "${rule[@]}"; done
            if [ "$percent" != 0 ]; then
                in_ns "r-$name" iptables -I FORWARD 1 -m statistic --mode random \
                    --probability "$p" -j DROP
            fi
        done
    done
}

case "$cmd" in
up) up ;;
down) down ;;
loss) shift 2; loss "$@" ;;
*) echo "usage: $0 up|down|loss PREFIX [PERCENT HOST...]" >&2; exit 2 ;;
esac
