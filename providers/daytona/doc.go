// Package daytona is reaperd's Daytona provider. It talks to the Daytona API
// through Daytona's official generated client,
// github.com/daytonaio/daytona/libs/api-client-go (v0.190.0).
//
// # Basics
//
// ConfigFromEnv reads:
//
//	DAYTONA_API_KEY          API key, sent as "Authorization: Bearer <key>"; without it the provider is disabled
//	DAYTONA_API_URL          API base URL, default https://app.daytona.io/api
//	DAYTONA_SERVER_URL       deprecated name of DAYTONA_API_URL, read only when DAYTONA_API_URL is
//	                         unset or blank, as Daytona's SDKs do
//	DAYTONA_ORGANIZATION_ID  optional, sent as X-Daytona-Organization-ID; an API key is already
//	                         bound to one organization, so it is normally left unset
//
// Close deletes the sandbox with DELETE /sandbox/{id}, whatever its state:
// started, stopped, archived or paused sandboxes are all destroyed, releasing
// their compute, disk and archived snapshot. Daytona deletes asynchronously:
// the 200 answer only records desiredState "destroyed" (and renames the
// sandbox DESTROYED_<name>_<ms>); a runner then takes the sandbox through
// "destroying" to "destroyed". reaperd does not count the 200 as a
// confirmation. Close looks the sandbox up with GET /sandbox/{id} (and
// polls it for up to Config.DeleteWait, by default not at all) and returns
// nil only when it answers 404 or state "destroyed" after that accepted
// delete. If the sandbox is still destroying, Close returns an error
// wrapping reaper.ErrAccepted: the engine then confirms the delete with
// the listing, without holding a close slot while Daytona works. A
// retried DELETE is answered 409 while the destroy runs (ErrAccepted
// again, once GET shows it destroying), and 404 after it.
//
// Answers to the DELETE are classified as follows:
//
//	2xx                    delete accepted; GET decides, as above
//	404 "Sandbox with ID or name … not found" (code NOT_FOUND)
//	                       reaper.ErrNotFound, without any further lookup. It is
//	                       no proof that the sandbox is gone: Daytona's
//	                       SandboxAccessGuard answers this 404 for a sandbox of
//	                       another organization and whenever its own lookup
//	                       fails (a database error included), and an unknown
//	                       route (a wrong DAYTONA_API_URL path) answers 404 too.
//	                       The engine confirms it with the listing.
//	409 "Sandbox state change in progress" (code SANDBOX_STATE_CHANGE_IN_PROGRESS)
//	                       a delete or other transition is under way; GET decides:
//	                       "destroyed" is nil, 404 is reaper.ErrNotFound, any
//	                       other state ErrConflict
//	401, 403               ErrUnauthorized, hint "check DAYTONA_API_KEY"
//	429                    ErrRateLimited; the delay is the largest of Retry-After and the
//	                       Retry-After-<throttler> headers of @nestjs/throttler (DELETE is
//	                       counted by "sandbox-lifecycle", GET by "authenticated")
//	5xx, other 4xx, timeouts, refused or reset connections
//	                       ErrTransient
//
// An empty id, or one holding "/", "?" or "#", which no request can name, is
// refused without a request as reaper.ErrInvalid.
//
// List pages through GET /sandbox with Daytona's cursor pagination (limit
// 100, nextCursor), sorted by creation time, oldest first
// (sort=createdAt&order=asc), and sends ListFilter.Labels as the "labels"
// query parameter, a JSON object ({"team":"a"}) the API matches by
// containment. It returns id, name, snapshot (as Sandbox.Template, empty
// when Daytona reports none, as for a sandbox built from an image),
// createdAt, state and labels of every sandbox not destroyed; stopped,
// archived, paused and still-destroying sandboxes are included. A sandbox
// created without a name is named after its id by Daytona.
//
// The sort is explicit because Daytona's default order is by last activity,
// newest first, and its cursor is the (sort value, id) of a page's last
// item: a sandbox that sees activity while List pages jumps ahead of the
// cursor and would be missed, and the listing is the engine's proof that a
// sandbox is gone. Creation time does not change. Ascending rather than
// descending, because the cursor of Daytona's Postgres search carries
// milliseconds while the database keeps microseconds: ascending, a sandbox
// created in the cursor's millisecond is listed again (List drops the
// repeat); descending, it would be skipped. A sandbox created while List
// pages is appended, not missed.
//
// ListPages (reaper.PageLister) hands the same listing over page by page,
// one page of GET /sandbox at a time, so that the engine never holds a
// large fleet whole; List collects its pages.
//
// Check lists one sandbox (GET /sandbox?limit=1) to check the API key: nil
// when accepted, reaper.ErrUnauthorized naming DAYTONA_API_KEY on 401 or
// 403, reaper.ErrTransient naming DAYTONA_API_URL on 404 (the URL is not the
// API), and otherwise classified as Close classifies.
//
// # Caveats
//
// Daytona's own cleanup leaves sandboxes allocated. Auto-stop (by default
// after 15 minutes without activity) only stops a sandbox; auto-archive (by
// default 7 days after it stopped) moves its filesystem to object storage;
// auto-delete is off unless the creator set autoDeleteInterval. A leaked
// sandbox therefore lingers stopped or archived, counting against disk quota
// and storage, until someone deletes it. reaperd's discovery (List) shows
// those, and Close deletes them.
//
// When a runner fails to destroy a sandbox, Daytona sets state "error" with
// desiredState "destroyed" and from then on hides it: GET and DELETE answer
// 404 and the list omits it unless includeErroredDeleted is set. Close
// returns nil when this happens while it waits after its own accepted
// delete, and reaper.ErrNotFound afterwards; since the list omits the
// sandbox, the engine records it closed either way. Finishing the destroy
// is Daytona's job.
//
// A 400 "Cannot delete sandbox which has active fork children" is reported as
// a transient error carrying Daytona's message: the forks must be closed
// first. The list is eventually consistent, so a sandbox created a moment ago
// may be missing from it. Sandbox names are accepted by the API in place of
// ids, but reaperd always uses ids.
package daytona
