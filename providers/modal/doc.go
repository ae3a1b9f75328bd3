// Package modal is reaperd's provider for Modal sandboxes
// (https://modal.com), built on the official Go SDK
// github.com/modal-labs/libmodal/modal-go, pinned at v0.6.0 (v0.7 changes
// Sandbox.Terminate).
//
// # Basics
//
// ConfigFromEnv reads the variables the Modal clients read:
//
//	MODAL_TOKEN_ID, MODAL_TOKEN_SECRET  the token pair (required)
//	MODAL_SERVER_URL                    default https://api.modal.com:443; http://host:port for plaintext
//	MODAL_ENVIRONMENT                   environment List looks in (default: the workspace's default)
//
// Close terminates the sandbox with the SDK: Sandboxes.FromID (a
// SandboxWait with timeout 0, which fails NOT_FOUND for an unknown id), then
// Sandbox.Terminate (SandboxTerminate). Termination is final and frees the
// sandbox's compute; Modal has no separate delete, and terminating a sandbox
// that already finished succeeds (Close returns nil: the sandbox is in its
// final state). An id Modal does not know, NOT_FOUND from either call, is
// reaper.ErrNotFound, and Close makes no further call: Modal answers so for
// a sandbox of another workspace too, and for a finished sandbox it no
// longer keeps, so the engine confirms it with the listing. List calls the
// SandboxList RPC itself, because the SDK's List
// keeps only ids: it pages back in time with before_timestamp (the oldest
// created_at of the previous page) until an empty page, asks for unfinished
// sandboxes only, filters by tags server-side, and reports each sandbox's
// id, creation time, tags as labels, and a state derived from its task
// ("pending", "running").
//
// Every call carries the token pair (x-modal-token-id, x-modal-token-secret)
// and, but AuthTokenGet, a short-lived JWT from AuthTokenGet
// (x-modal-auth-token), cached until a minute before its exp claim. Each
// call is bounded by Config.Timeout. UNAUTHENTICATED and PERMISSION_DENIED
// are reaper.ErrUnauthorized; RESOURCE_EXHAUSTED is reaper.ErrRateLimited,
// with the delay of a google.rpc.RetryInfo detail when the status has one;
// NOT_FOUND is reaper.ErrNotFound (of the sandbox for Close, of
// MODAL_ENVIRONMENT for List); everything else (UNAVAILABLE, INTERNAL,
// DEADLINE_EXCEEDED, ...) is reaper.ErrTransient. gRPC errors carry no HTTP
// status: ProviderError.StatusCode stays 0 and the message names the gRPC
// code.
//
// # Caveats
//
// The SDK client is built with NewClientWithOptions around this package's
// own gRPC connection (ClientParams.ControlPlaneClient), because the SDK
// takes its server URL only from MODAL_SERVER_URL or ~/.modal.toml, never
// from a parameter, and its own connection retries some codes internally
// without a per-call deadline. This package also keeps the SDK from reading
// ~/.modal.toml at all. The SDK's client is built on the first Close, since
// building it fetches a token; Shutdown stops its background token refresh.
//
// Modal finishes a sandbox on its own when its command exits or its timeout
// (5 minutes by default, at most 24 hours) or idle timeout passes. A sandbox
// created with a long timeout, or one running a long-lived command such as
// "sleep infinity", keeps billing until that deadline; those are what
// reaperd terminates. Finished sandboxes hold no compute and are not listed.
//
// SandboxList is not a documented public API. Sandboxes created in the same
// instant (equal created_at) on either side of a page boundary could be
// skipped by the before_timestamp cursor; a cursor that does not move back
// in time is reported as a transient error instead of looping.
package modal
