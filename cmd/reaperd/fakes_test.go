package main

import (
	"testing"

	"github.com/reaperd/reaperd/providers/daytona/daytonatest"
	"github.com/reaperd/reaperd/providers/e2b/e2btest"
	"github.com/reaperd/reaperd/providers/modal/modaltest"
	"github.com/reaperd/reaperd/providers/runloop/runlooptest"
)

// Credentials the fakes of allFakes accept. They are fakes' keys.
const (
	fakeDaytonaKey   = "dtn_fake_key_0123456789"
	fakeRunloopKey   = "ak_fake_runloop_0123456789"
	fakeModalTokenID = "ak-fake-token"
	fakeModalSecret  = "as-fake-secret"
)

// fakes are in-process fakes of all four providers' APIs.
type fakes struct {
	daytona *daytonatest.Server
	e2b     *e2btest.Server
	modal   *modaltest.Server
	runloop *runlooptest.Server
}

// allFakes starts a fake of each provider until the test ends.
func allFakes(t *testing.T) *fakes {
	t.Helper()
	f := &fakes{daytona: daytonatest.NewServer(fakeDaytonaKey), e2b: e2btest.NewServer(e2bKey),
		modal: modaltest.NewServer(fakeModalTokenID, fakeModalSecret), runloop: runlooptest.NewServer(fakeRunloopKey)}
	t.Cleanup(f.daytona.Close)
	t.Cleanup(f.e2b.Close)
	t.Cleanup(f.modal.Close)
	t.Cleanup(f.runloop.Close)
	return f
}

// env is the environment that points a daemon at the fakes.
func (f *fakes) env() []string {
	return []string{
		"DAYTONA_API_KEY=" + fakeDaytonaKey, "DAYTONA_API_URL=" + f.daytona.URL,
		"E2B_API_KEY=" + e2bKey, "E2B_API_URL=" + f.e2b.URL,
		"MODAL_TOKEN_ID=" + fakeModalTokenID, "MODAL_TOKEN_SECRET=" + fakeModalSecret, "MODAL_SERVER_URL=" + f.modal.URL,
		"RUNLOOP_API_KEY=" + fakeRunloopKey, "RUNLOOP_BASE_URL=" + f.runloop.URL,
	}
}
