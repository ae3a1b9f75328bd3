// Package runloop is the reaper.Provider for Runloop devboxes, spoken to over
// the Runloop REST API with net/http.
//
// # Basics
//
// ConfigFromEnv reads RUNLOOP_API_KEY (sent as "Authorization: Bearer") and
// RUNLOOP_BASE_URL (default https://api.runloop.ai). Without an API key the
// provider is disabled (Config.Enabled).
//
// Close calls POST /v1/devboxes/{id}/shutdown. Runloop has no delete: a shut
// down devbox releases its compute and its disk and remains only as a record
// with status "shutdown". A suspended devbox, which no longer uses compute but
// is still billed for its disk, is closed the same way. Close returns nil when
// the shutdown is accepted and when the devbox is already shut down or failed
// (whether Runloop answers such a shutdown with 200 or refuses it with 400: a
// refusal is checked with GET /v1/devboxes/{id}). Runloop documents no other
// meaning for a 400 to a shutdown, so it is never reported as
// reaper.ErrInvalid: a devbox the GET shows still live is reaper.ErrConflict
// while it changes state (queued, provisioning, suspending, ...), else
// reaper.ErrTransient. Only an empty id is reaper.ErrInvalid, without a
// request. A 404, to the shutdown or to that GET, is reaper.ErrNotFound, and
// Close makes no further request.
// Runloop keeps shut down devboxes as records, so a 404 means an id this
// account never had (a devbox of another account included), or a
// RUNLOOP_BASE_URL that does not point at the API; the engine confirms it
// with List, which fails in the second case.
//
// Runloop refuses the shutdown of a devbox with a snapshot in progress with
// 409 Conflict, which Close reports as reaper.ErrConflict so that the engine
// retries. From close attempt Config.ForceAfter+1 on (default: the fourth
// attempt; the attempt number comes from reaper.CloseAttempt) the shutdown is
// sent with force=true, which Runloop honours even then, abandoning the
// snapshot.
//
// List calls GET /v1/devboxes once per live status, in lifecycle order
// (scheduled, queued, provisioning, initializing, running, suspending,
// suspended, resuming), following the starting_after cursor while has_more
// is true. A queued devbox is waiting for infrastructure (FLEX devboxes start
// so) and is live: it will hold compute once allocated, and a shutdown
// releases it. scheduled is the deprecated name of queued, which the API
// still reports. Runloop has no metadata filter on the devbox list, so
// ListFilter.Labels is matched here against each devbox's metadata. Devboxes
// that are shut down or failed are never returned. A sandbox's Name is the
// devbox's name (empty when it has none), its Template the blueprint_id it
// was created from, else its snapshot_id, and its CreatedAt its
// create_time_ms. Its Resources is the size its launch_parameters give: the
// documented vCPUs, memory and disk of a preset resource_size_request
// (X_SMALL 0.5 vCPU, 1 GiB, 4 GiB disk; SMALL 1, 2, 4; MEDIUM 2, 4, 8; LARGE
// 2, 8, 16; X_LARGE 4, 16, 16; XX_LARGE 8, 32, 16), or, for CUSTOM_SIZE,
// custom_cpu_cores, custom_gb_memory and custom_disk_size, a figure the
// devbox does not give left zero. A devbox without a resource_size_request,
// or with one this version does not know, has no Resources. Runloop reports
// no GPUs.
//
// ListPages (reaper.PageLister) hands the same listing over page by page,
// one page of GET /v1/devboxes at a time; List collects its pages and
// sorts them by creation time.
//
// Check lists one devbox (GET /v1/devboxes?limit=1) to check the API key:
// nil when accepted, reaper.ErrUnauthorized naming RUNLOOP_API_KEY on 401 or
// 403, reaper.ErrTransient naming RUNLOOP_BASE_URL on 404.
//
// # Caveats
//
// Runloop's own cleanup is a maximum lifetime (keep_alive_time_seconds,
// default one hour, at most 48 hours) and an optional idle policy. Neither
// catches what reaperd is for: a devbox created with a long lifetime by an
// agent that died minutes later keeps billing until its timer runs out, and
// an idle policy of "suspend" (or a manual suspend) leaves a suspended devbox
// that Runloop bills for its disk until someone resumes or shuts it down.
//
// Listing by status means a devbox that changes status while List runs may be
// missed by that List (it is found by the next one) and that a status added
// to the API later is not listed until it is added here. Forcing a shutdown
// abandons an in-progress snapshot; set Config.ForceAfter negative to never
// force. Runloop documents no error body schema; error messages are taken
// from a "message", "error" or "detail" field when there is one.
package runloop
