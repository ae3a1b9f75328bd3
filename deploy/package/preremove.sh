#!/bin/sh
# reaperd package: before removal.
# deb: "remove" (also "upgrade", "deconfigure", "failed-upgrade");
# rpm: 0 on removal, 1 or more on an upgrade.
# Only a removal stops the daemon: an upgrade restarts it in postinstall.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

# The socket first, so that a client cannot start the service again.
for unit in reaperd.socket reaperd.service; do
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now "$unit" >/dev/null 2>&1 || true
	elif command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload disable "$unit" >/dev/null 2>&1 || true
	fi
done
exit 0
