#!/bin/sh
# "networkctl reload" where there is no D-Bus (tests, TESTBED.md): restart systemd-networkd in the
# current network namespace with a private mount namespace reading $1, its PID kept in $2.
# Usage: networkd-restart.sh NETWORK-DIR PIDFILE   (bounded: 5 s to stop, 5 s to start)
dir="$1"
pidfile="$2"
old=$(cat "$pidfile" 2>/dev/null)
if [ -n "$old" ] && kill "$old" 2>/dev/null; then
  i=0
  while kill -0 "$old" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
fi
unshare -m --propagation private sh -c 'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && mount --bind "$1" /etc/systemd/network && mount -o remount,bind,ro /sys && exec /lib/systemd/systemd-networkd' sh "$dir" </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid" > "$pidfile"
i=0
while [ "$i" -lt 50 ]; do
  if [ -n "$(ls "/proc/$pid/root/run/systemd/netif/links" 2>/dev/null)" ]; then exit 0; fi
  sleep 0.1
  i=$((i + 1))
done
echo "systemd-networkd did not start" >&2
exit 1
