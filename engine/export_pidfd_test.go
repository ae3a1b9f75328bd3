package engine

// SetMaxPidfds caps the pidfds e's process watcher holds; a negative n
// turns pidfds off, so that it polls. Call it before Run.
func SetMaxPidfds(e *Engine, n int) { e.maxPidfds = n }
