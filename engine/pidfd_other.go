//go:build !linux

package engine

// pidfdWatcher exists only on Linux; elsewhere the process watcher polls.
type pidfdWatcher struct{ limit int }

func (e *Engine) openPidfdWatcher() (*pidfdWatcher, string) {
	return nil, "pidfds exist only on Linux"
}

func (w *pidfdWatcher) run() error { return nil }
