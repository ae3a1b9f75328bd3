// Package e2b closes and lists E2B sandboxes (https://e2b.dev) through the
// E2B REST API, with net/http: E2B publishes no Go SDK.
//
// # Basics
//
// ConfigFromEnv reads E2B_API_KEY (the team API key, sent as the X-API-Key
// header) and the endpoint: E2B_API_URL when set, else https://api.$E2B_DOMAIN,
// where E2B_DOMAIN defaults to "e2b.app". The provider is enabled when the key
// is set. Every request is bounded by Config.Timeout (30s when zero).
//
// Close kills the sandbox with DELETE /sandboxes/{sandboxID}. At E2B this is a
// delete, not a stop: a running sandbox is killed, and a paused one has its
// snapshot deleted, so nothing of it remains billable. 204 is closed. 404
// with the API's JSON error body ({"code":404,"message":...}) is
// reaper.ErrNotFound and Close looks no further: E2B answers it for a
// sandbox already killed, and also for a sandbox of another team (a key of
// the wrong team), so the engine confirms it with the listing. A 404
// without that body is reaper.ErrTransient with the hint "check
// E2B_API_URL".
//
// List calls GET /v2/sandboxes with state=running,paused (one comma-separated
// value: the parameter is form style, explode false), limit=100, and, for a
// label filter, the metadata parameter; it follows the X-Next-Token response
// header, sent back as the nextToken parameter, to the last page. A sandbox's
// CreatedAt is its startedAt, its Labels are its metadata, and its State is
// "running" or "paused" as E2B reports it.
//
// Errors: 401 and 403 are reaper.ErrUnauthorized with the hint "check
// E2B_API_KEY"; 429 is reaper.ErrRateLimited carrying Retry-After when sent;
// 409 is reaper.ErrConflict; 5xx, timeouts, connection failures, malformed
// bodies and any other status are reaper.ErrTransient.
//
// # Caveats
//
// E2B kills a running sandbox itself when its timeout passes (5 minutes by
// default, up to 24 hours), but a sandbox created with autoPause, or paused
// explicitly, is paused instead and then kept indefinitely: E2B never times
// out a paused sandbox, and its snapshot stays stored until someone kills it.
// Those, and long-timeout sandboxes whose agent died, are what reaperd closes.
//
// The metadata filter is escaped twice per key and value (see EncodeMetadata)
// because the API unescapes the parameter three times in all; the official
// SDKs do the same. Pausing sandboxes are listed as "paused" by the API.
// Redirects are never followed, so the API key cannot leak to another host.
package e2b
