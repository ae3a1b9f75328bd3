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
// E2B_API_URL". A 400 with the API's body ({"code":400,"message":"Invalid
// sandbox ID"}) is reaper.ErrInvalid: the API checks the id before it looks
// for the sandbox (lowercase letters and digits, optionally followed by one
// "-clientID" suffix, which it drops), and no retry changes that answer. An
// empty id is reaper.ErrInvalid without a request. The kill handler never
// answers 409: E2B has no "state change in progress" answer to a kill.
//
// List calls GET /v2/sandboxes with state=running,paused (one comma-separated
// value: the parameter is form style, explode false), limit=100, and, for a
// label filter, the metadata parameter; it follows the X-Next-Token response
// header, sent back as the nextToken parameter, to the last page, however
// many pages there are. A next token the server handed out before means it
// is looping, and List fails with reaper.ErrTransient rather than return a
// listing it cannot show complete. A sandbox's Labels are its metadata, its
// State is "running" or "paused" as E2B reports it, its Template is the
// alias of its template when E2B reports one (e.g. "base"), else the
// template's id (templateID), and its StartedAt is its startedAt: the time
// it last started, not its creation. E2B resets startedAt on every resume,
// so a sandbox paused for a week and resumed a minute ago would read a
// minute old; the API reports no creation time. CreatedAt is therefore left
// zero, and reaperd ages an untracked E2B sandbox from the first listing
// that showed it. Name is never set: E2B sandboxes
// have none.
//
// ListPages (reaper.PageLister) hands the same listing over page by page,
// one page of GET /v2/sandboxes at a time (the second pass's pages without
// the sandboxes already given); List collects its pages.
//
// Check lists at most one running sandbox (GET /v2/sandboxes?limit=1&
// state=running) to check the API key: nil when accepted,
// reaper.ErrUnauthorized naming E2B_API_KEY on 401 or 403,
// reaper.ErrTransient naming E2B_API_URL on 404.
//
// Errors: 401 and 403 are reaper.ErrUnauthorized with the hint "check
// E2B_API_KEY"; 429 is reaper.ErrRateLimited carrying Retry-After when sent;
// 5xx, timeouts, connection failures, malformed bodies and any other status
// (409 included, which E2B does not answer to these calls) are
// reaper.ErrTransient.
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
//
// The list is ordered by startedAt, newest first, and its cursor is the
// (startedAt, id) of a page's last sandbox. A paused sandbox that is resumed
// while List pages starts anew and moves ahead of the cursor; List therefore
// reads the newest sandboxes again after its last page, until it reaches
// those it saw first, so that a listing never leaves out a live sandbox
// (which would read as proof that it is gone). The same reset makes an age
// read from CreatedAt the age of the current run only.
// Redirects are never followed, so the API key cannot leak to another host.
package e2b
