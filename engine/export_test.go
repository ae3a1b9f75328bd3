package engine

// RememberedUntracked returns how many untracked sandboxes e remembers
// from its last discoveries.
func RememberedUntracked(e *Engine) int { return e.remembered() }
