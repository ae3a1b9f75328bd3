package ledger

// SetRewriteChunk sets how many entries one transaction of the schema 4
// migration rewrites, until the test ends.
func SetRewriteChunk(n int) (restore func()) {
	old := rewriteChunk
	rewriteChunk = n
	return func() { rewriteChunk = old }
}
