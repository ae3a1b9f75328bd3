#!/bin/sh
# reaperd package: after install and upgrade.
# deb: "configure" [version replaced, empty on a first install];
# rpm: 1 on a first install, 2 or more on an upgrade.
set -e

# The system user and group "reaperd", from /usr/lib/sysusers.d/reaperd.conf
# (or an override of the same name in /etc/sysusers.d). Members of the group
# may use the daemon's socket, i.e. the reaperd CLI.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers reaperd.conf
elif ! getent passwd reaperd >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/reaperd --no-create-home \
		--shell "$(command -v nologin || echo /bin/false)" --comment "reaperd sandbox reaper" reaperd
fi

# The daemon reads its config as group reaperd; the file may hold keys, so
# it is not world-readable. (A conffile replaced by an upgrade comes back
# as root:root, so this runs each time.)
if getent group reaperd >/dev/null 2>&1; then
	for f in /etc/reaperd /etc/reaperd/reaperd.toml; do
		if [ -e "$f" ]; then chgrp reaperd "$f"; fi
	done
fi

# Only where systemd runs (not in a container or chroot without it).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	upgrade=
	case "$1" in
	configure) if [ -n "$2" ]; then upgrade=1; fi ;;
	[2-9] | [1-9][0-9]*) upgrade=1 ;;
	esac
	# An upgrade restarts a running daemon on the new binary. Closes in
	# flight finish or stay "closing" and resume at its start. A first
	# install starts nothing: add provider keys, then
	# `systemctl enable --now reaperd`.
	if [ -n "$upgrade" ]; then
		systemctl try-restart reaperd.service || true
	fi
fi
exit 0
