package engine

// Log keys used by the engine.
const (
	LogKey      = "key"
	LogSession  = "session"
	LogProvider = "provider"
	LogReason   = "reason"
	LogAttempt  = "attempt"
	LogClass    = "class"
	LogErr      = "err"
	LogRetryIn  = "retry_in"
	LogCount    = "count"
	LogDuration = "duration"
	LogPanic    = "panic"
	LogStack    = "stack"
	LogPID      = "pid"
	LogLimit    = "limit"
	LogMaxFDs   = "max_pidfds"
	LogInterval = "interval"
	LogPages    = "pages"
)
