
P=spk-q$$
ip -batch - <<B
netns add $P-sw
netns add $P-h0
netns add $P-h1
netns add $P-h0-v
netns add $P-h1-v
netns add $P-h0-m
netns add $P-h1-m
link add u0 netns $P-sw type veth peer name ul netns $P-h0
link add u1 netns $P-sw type veth peer name ul netns $P-h1
link add t0 netns $P-h0-v mtu 1450 type veth peer name eth0 address 02:bf:00:00:00:0a netns $P-h0-m
link add t1 netns $P-h1-v mtu 1450 type veth peer name eth0 address 02:bf:00:00:00:46 netns $P-h1-m
B
nsenter --net=/run/netns/$P-sw ip -batch - <<B
link add sw0 type bridge
link set sw0 up
link set u0 master sw0 up
link set u1 master sw0 up
B
for h in 0 1; do
nsenter --net=/run/netns/$P-h$h ip -batch - <<B
link set lo up
addr add 192.168.77.$((h+1))/24 dev ul
link set ul up
link add vx100 address 02:00:c0:a8:4d:0$((h+1)) netns $P-h$h-v type vxlan id 100 local 192.168.77.$((h+1)) dev ul dstport 4789 nolearning
B
nsenter --net=/run/netns/$P-h$h-v sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'
nsenter --net=/run/netns/$P-h$h-v ip -batch - <<B
link set lo up
link add br0 address 02:aa:00:00:00:64 type bridge
addr add 10.1.0.1/24 dev br0
link set br0 up
link set vx100 up
link set t$h master br0 up
B
nsenter --net=/run/netns/$P-h$h-v sh -c 'echo 1 > /proc/sys/net/ipv4/conf/br0/proxy_arp; echo 0 > /proc/sys/net/ipv4/neigh/br0/proxy_delay'
done
nsenter --net=/run/netns/$P-h0-m ip -batch - <<B
link set lo up
link set eth0 addrgenmode none
addr add 10.1.0.10/24 dev eth0
link set eth0 up
route add default via 10.1.0.1
B
nsenter --net=/run/netns/$P-h1-m ip -batch - <<B
link set lo up
link set eth0 addrgenmode none
addr add 10.1.0.70/24 dev eth0
link set eth0 up
route add default via 10.1.0.1
B
