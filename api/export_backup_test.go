package api

import "time"

// SetBackupStall sets how long a backup waits on a client that stops
// reading, and returns a function that restores it.
func SetBackupStall(d time.Duration) (restore func()) {
	old := backupStall
	backupStall = d
	return func() { backupStall = old }
}
