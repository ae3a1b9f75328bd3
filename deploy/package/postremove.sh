#!/bin/sh
# reaperd package: after removal, and after an upgrade removed the old
# version's files. The ledger (/var/lib/reaperd, the record for cost
# audits), the config and keys in /etc/reaperd and the user "reaperd" are
# kept: remove them deliberately.
set -e

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
