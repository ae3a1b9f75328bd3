// Package modal is reaperd's provider for Modal sandboxes
// (https://modal.com), built on Modal's official Go SDK
// github.com/modal-labs/modal-client/go, pinned at v0.11.1 (it replaced
// github.com/modal-labs/libmodal/modal-go, whose v0.6.0 knows nothing of
// Modal's V2 sandboxes).
//
// # Basics
//
// ConfigFromEnv reads the variables the Modal clients read:
//
//	MODAL_TOKEN_ID, MODAL_TOKEN_SECRET  the token pair (required)
//	MODAL_SERVER_URL                    default https://api.modal.com:443; http://host:port for plaintext
//	MODAL_ENVIRONMENT                   an environment List looks in (default: the token's default one)
//
// Config.Environments adds further environments (there is no Modal
// variable for a list): List covers Config.Environment and every one of
// Config.Environments, each once, and only the token's default environment
// when neither names one (Config.ListEnvironments). Close needs no
// environment: Modal terminates a sandbox by its id, whichever environment
// holds it.
//
// # V1 and V2 sandboxes
//
// Modal runs two sandbox backends. The SDK tells them apart by the id
// alone (sandbox.go, getSandboxVersion): "sb-" and 22 base-62 characters is
// a V1 sandbox, any other id (today "sb-" and a 26-character ULID) a V2
// one, and every call about a V2 sandbox goes to a V2 RPC
// (SandboxTerminateV2, SandboxWaitV2, ...). A V1 terminate for a V2 id can
// answer NOT_FOUND for a running sandbox, so the routing matters; since
// SDK v0.11.0, Sandboxes.Create makes V2 sandboxes (but for GPU ones)
// unless MODAL_SANDBOX_V2=0.
//
// Close terminates the sandbox with the SDK: Sandboxes.FromID (no call:
// it builds a handle routed by the id's shape), Sandbox.Terminate
// (SandboxTerminate or SandboxTerminateV2), then Sandbox.Wait (SandboxWait
// or SandboxWaitV2, long polls) for at most 10 seconds and Config.Timeout,
// until Modal reports a result: termination is asynchronous. Termination is
// final and frees the sandbox's compute; Modal has no separate delete, and
// terminating a sandbox that already finished succeeds with its existing
// result, so Close returns nil for it (the sandbox is in its final state).
// An accepted terminate whose sandbox has not finished within the wait is a
// transient timeout; the engine closes again, and the next terminate finds
// it finished. An id Modal does not know, NOT_FOUND from the terminate, is
// reaper.ErrNotFound, and Close makes no further call: Modal answers so for
// a sandbox of another workspace too, and for a finished sandbox it no
// longer keeps, so the engine confirms it with the listing.
//
// List calls the listing RPCs itself, because the SDK's listings keep only
// ids. In each environment it reads both SandboxList (V1 sandboxes) and
// SandboxListV2 (V1 and V2 sandboxes: the SDK's ExperimentalList, which
// its Sandboxes.List uses by default since v0.11.0) to the end and reports
// every sandbox once, so that neither listing's gaps can hide a live
// sandbox from the engine's second signal. Each pages back in time with
// before_timestamp (the oldest created_at of the previous page) until an
// empty page, asks for unfinished sandboxes only, and filters by tags
// server-side (checked again here). Each sandbox is reported with its id,
// creation time, tags as labels, its name (Sandbox.Name), the name of its
// app (Sandbox.App: SandboxInfo carries only the app id, so the names come
// from AppList, called once per environment holding an app not seen
// before, and remembered), a state derived from its task ("pending",
// "running"), and its size (Sandbox.Resources) from the same SandboxInfo,
// with no further call: resource_info's CPU request (milli_cpu, in
// thousandths of a physical core) in vCPUs, two per core as Modal counts
// them, its memory request (memory_mb) and ephemeral disk
// (ephemeral_disk_mb) in GiB, and the GPU type and count of its task
// (task_info.gpu_config), else the type resource_info names. What the
// listing does not give is zero, and a sandbox listed without any of it has
// no Resources.
//
// ListPages (reaper.PageLister) hands the same listing over page by page,
// one page of a listing RPC at a time, without the sandboxes an earlier
// page gave, and asks AppList for a page holding an app it does not know
// (once per app and listing); List collects its pages and sorts them,
// newest first.
//
// Check calls WorkspaceNameLookup, Modal's "who am I" (what the Modal
// Python client calls to verify a new token: config.py, _lookup_workspace),
// after the token exchange below.
//
// Every call carries the token pair (x-modal-token-id, x-modal-token-secret)
// and, but AuthTokenGet, a short-lived JWT from AuthTokenGet
// (x-modal-auth-token), cached until a minute before its exp claim. Each
// call is bounded by Config.Timeout. UNAUTHENTICATED and PERMISSION_DENIED
// are reaper.ErrUnauthorized; RESOURCE_EXHAUSTED is reaper.ErrRateLimited;
// NOT_FOUND is reaper.ErrNotFound (of the sandbox for Close, of an
// environment for List); INVALID_ARGUMENT is reaper.ErrInvalid; everything
// else (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, ...) is
// reaper.ErrTransient. gRPC errors carry no HTTP status:
// ProviderError.StatusCode stays 0 and the message names the gRPC code.
//
// # Retry delays
//
// Modal's server asks a client to wait with a modal.client.RPCRetryPolicy
// status detail (retry_after_secs, float seconds, encoded under
// type.modal.com/): the only signal the SDK's retry interceptor reads
// (client.go, getServerRetryPolicy), and it sleeps that long before
// retrying, however often. reaperd does not retry inside a call: it passes
// the delay on as ProviderError.RetryAfter, for the engine's backoff, and
// honours two more signals a front end may send: a google.rpc.RetryInfo
// status detail and a "retry-after" response header or trailer (seconds or
// an HTTP date). The largest delay wins. The delay is passed on whatever
// the status code; RESOURCE_EXHAUSTED is what makes the error
// reaper.ErrRateLimited.
//
// # Caveats
//
// The SDK client is built with NewClientWithOptions around this package's
// own gRPC connection (ClientParams.ControlPlaneClient), because the SDK
// takes its server URL only from MODAL_SERVER_URL or ~/.modal.toml, never
// from a parameter, and its own connection retries some codes internally
// (and throttled calls without limit) without a per-call deadline. The SDK
// then installs none of its interceptors and fetches no token itself. This
// package also keeps the SDK from reading ~/.modal.toml at all.
//
// Modal finishes a sandbox on its own when its command exits or its timeout
// (5 minutes by default, at most 24 hours) or idle timeout passes. A sandbox
// created with a long timeout, or one running a long-lived command such as
// "sleep infinity", keeps billing until that deadline; those are what
// reaperd terminates. Finished sandboxes hold no compute and are not listed.
//
// The listing covers only the configured environments. A sandbox of an
// environment left out is never listed, so a not-found for it (a spurious
// one included) would be confirmed by its absence: configure every
// environment reaperd's sessions create sandboxes in.
//
// SandboxList and SandboxListV2 are not a documented public API, and the
// SDK marks the V2 listing experimental. Sandboxes created in the same
// instant (equal created_at) on either side of a page boundary could be
// skipped by the before_timestamp cursor; a cursor that does not move back
// in time is reported as a transient error instead of looping.
package modal
