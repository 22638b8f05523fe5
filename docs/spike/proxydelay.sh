# Is proxy_delay's random wait (default 80 jiffies = 0.8 s) seen by a VM's first packet?
set -e
P=spk-pd$$
export P
sed "s/^P=spk-q\$\$$/P=$P/" quick.sh > /tmp/spike/.quick-$P.sh
bash /tmp/spike/.quick-$P.sh >/dev/null 2>&1
E="nsenter --net=/run/netns"
for h in 0 1; do r=$((1-h))
$E/$P-h$h-v ip link set vx100 addrgenmode none
$E/$P-h$h-v sh -c 'echo 0 > /proc/sys/net/ipv6/conf/vx100/disable_ipv6'
$E/$P-h$h-v ip -batch - <<B
neigh replace fe80::c0a8:4d0$((r+1)) lladdr 02:00:c0:a8:4d:0$((r+1)) dev vx100 nud permanent
route replace 10.1.0.$((r*64))/26 via inet6 fe80::c0a8:4d0$((r+1)) dev vx100 onlink
B
$E/$P-h$h-v bridge fdb replace 02:00:c0:a8:4d:0$((r+1)) dev vx100 dst 192.168.77.$((r+1)) self permanent
done
$E/$P-h0-m ping -c2 -W1 10.1.0.70 >/dev/null
for delay in 80 0; do
  $E/$P-h0-v sh -c "echo $delay > /proc/sys/net/ipv4/neigh/br0/proxy_delay"
  t=""
  for i in 1 2 3 4 5 6 7 8; do
    $E/$P-h0-m ip neigh flush dev eth0
    t="$t $($E/$P-h0-m ping -c1 -W2 10.1.0.70 | sed -n 's/.*time=\([0-9.]*\) ms/\1/p')"
  done
  echo "proxy_delay=$delay: first-packet RTT (ms), ARP answered by proxy:$t"
done
ip netns list | awk -v p="$P" '$1 ~ "^"p"-" {print "netns del "$1}' | ip -batch -
rm -f /tmp/spike/.quick-$P.sh
