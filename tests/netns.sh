# netns.sh (sourced): netns_pair NS1 NS2 TAG makes two network namespaces
# joined by a veth pair (TAGa in NS1 with 192.0.2.1/24, TAGb in NS2 with
# 192.0.2.2/24, a documentation range that never leaves them), loopback up
# in both. Prints the reason and returns 1 when the kernel refuses
# namespaces (NS1 cannot be made), 2 when a later step fails. The caller
# removes them (ip netns del; the veth pair goes with them).
netns_pair() {
    local ns1=$1 ns2=$2 tag=$3 err
    err=$(ip netns add "$ns1" 2>&1) || {
        echo "$err"
        return 1
    }
    ip netns add "$ns2" &&
        ip link add "${tag}a" type veth peer name "${tag}b" &&
        ip link set "${tag}a" netns "$ns1" && ip link set "${tag}b" netns "$ns2" &&
        ip -n "$ns1" addr add 192.0.2.1/24 dev "${tag}a" &&
        ip -n "$ns2" addr add 192.0.2.2/24 dev "${tag}b" &&
        ip -n "$ns1" link set "${tag}a" up && ip -n "$ns2" link set "${tag}b" up &&
        ip -n "$ns1" link set lo up && ip -n "$ns2" link set lo up || return 2
}
